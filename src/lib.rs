//! amitool: see, check and migrate Xen paravirtual (PV) AMIs to HVM, on AWS or
//! on a local model of a Xen host.

pub mod backend;
pub mod catalog;
pub mod cli;
pub mod compat;
pub mod error;
pub mod fleet;
pub mod ids;
pub mod image;
pub mod interrupt;
pub mod kernels;
pub mod migrate;
pub mod model;
pub mod output;
pub mod progress;
pub mod regions;
pub mod successor;

pub use error::{Error, Result};
