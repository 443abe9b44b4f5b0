//! The library's one error type.

use std::path::PathBuf;

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in bilevel, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// wgpu found no adapter (or none matching `WGPU_ADAPTER_NAME` / `WGPU_BACKEND`).
    #[error(
        "no GPU adapter found{detail}. Install a GPU driver, or Mesa's software Vulkan driver \
         (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers libvulkan1`); \
         WGPU_BACKEND and WGPU_ADAPTER_NAME choose among several"
    )]
    NoAdapter {
        /// What was asked for, e.g. " matching WGPU_ADAPTER_NAME=foo".
        detail: String,
    },
    /// The adapter refused to open a device.
    #[error("could not open a device on adapter {adapter}: {message}")]
    RequestDevice {
        /// Adapter name.
        adapter: String,
        /// wgpu's message.
        message: String,
    },
    /// The device was lost (driver reset, GPU removed, out of memory).
    #[error("GPU device {adapter} was lost: {message}")]
    DeviceLost {
        /// Adapter name.
        adapter: String,
        /// wgpu's reason.
        message: String,
    },
    /// The device did not finish submitted work within the timeout.
    #[error(
        "GPU device {adapter} did not finish within {seconds} s while {context}: the device or its driver hung"
    )]
    DeviceHung {
        /// Adapter name.
        adapter: String,
        /// What bilevel was waiting for.
        context: String,
        /// The timeout.
        seconds: f64,
    },
    /// A wgpu validation or out-of-memory error while doing `context`.
    #[error("GPU error on {adapter} while {context}: {message}")]
    Gpu {
        /// Adapter name.
        adapter: String,
        /// What bilevel was doing (which kernel, which buffer).
        context: String,
        /// wgpu's message.
        message: String,
    },
    /// Shapes that do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A buffer larger than the adapter allows.
    #[error("{what} needs {size} bytes but the adapter's limit {limit_name} is {limit} bytes")]
    TooLarge {
        /// What was being allocated.
        what: String,
        /// Bytes asked for.
        size: u64,
        /// Which wgpu limit.
        limit_name: &'static str,
        /// Its value on this adapter.
        limit: u64,
    },
    /// A non-finite loss: the run stopped and the last finite parameters were kept.
    #[error(
        "phase '{phase}' diverged at step {step}: loss is {loss}; \
         the parameters from step {last_finite_step} (the last finite loss) were kept"
    )]
    Diverged {
        /// Phase name.
        phase: String,
        /// Step (from 1, within the phase) whose check found the non-finite loss.
        step: u64,
        /// The non-finite value.
        loss: f64,
        /// Step whose parameters were restored (0: the phase's start).
        last_finite_step: u64,
    },
    /// The run was asked to stop (a signal); its state went to the checkpoint.
    #[error("interrupted in phase '{phase}' at step {step}")]
    Interrupted {
        /// Phase name.
        phase: String,
        /// Steps the phase had taken.
        step: u64,
    },
    /// An invalid run configuration or data value.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file that could not be read or written.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's message.
        message: String,
    },
    /// A malformed input file.
    #[error("{}:{line}: {message}", file.display())]
    Parse {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}
