//! One module per command.

pub mod audit;
pub mod build;
pub mod checks;
pub mod demo;
pub mod history;
pub mod promote;
pub mod release;
pub mod render;
pub mod sandbox;
pub mod status;
pub mod unlock;
pub mod watch;
pub mod windows;
