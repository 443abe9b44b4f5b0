//! Ctrl-C and SIGTERM: ask the training loop to stop at the next step boundary (it writes a
//! checkpoint first), and remember which signal came, for the exit status.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

struct Flags {
    stop: Arc<AtomicBool>,
    terminated: Arc<AtomicBool>,
}

fn flags() -> &'static Flags {
    static FLAGS: OnceLock<Flags> = OnceLock::new();
    FLAGS.get_or_init(|| {
        let flags = Flags {
            stop: Arc::default(),
            terminated: Arc::default(),
        };
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&flags.stop)) {
                log::warn!("cannot catch signal {signal}: {e}");
            }
        }
        if let Err(e) =
            signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&flags.terminated))
        {
            log::warn!("cannot catch SIGTERM: {e}");
        }
        flags
    })
}

/// The flag a signal sets; installs the handlers on first use.
pub fn stop_flag() -> &'static AtomicBool {
    &flags().stop
}

/// The conventional exit status after an interruption: 128 + the signal's number.
pub fn interrupted_status() -> u8 {
    if flags().terminated.load(Ordering::Relaxed) {
        143
    } else {
        130
    }
}
