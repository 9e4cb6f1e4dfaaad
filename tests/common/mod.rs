pub mod chromium;
pub mod server;
pub mod lossyfs;
