pub mod chromium;
pub mod lossyfs;
pub mod server;
