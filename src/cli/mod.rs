//! The command line's subcommands; each is a small function over the library.

pub mod bench;
pub mod data;
pub mod devices;
pub mod generate;
pub mod predict;
pub mod progress;
pub mod shaders;
pub mod signals;
pub mod sweep;
pub mod table;
pub mod train;
