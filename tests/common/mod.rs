pub mod chromium;
pub mod server;
