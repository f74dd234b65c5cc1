//! The scenarios, by theme; each runs in its own child process.

use crate::harness::{Outcome, Target};

mod foreign;
mod free_threaded;
mod panics;
mod release;
pub(crate) mod shutdown;

use foreign::*;
use free_threaded::*;
use panics::*;
use release::*;
use shutdown::*;

/// A scenario: its name, how many children run it, and its body.
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    /// How many children run it (each must pass).
    pub(crate) runs: u32,
    pub(crate) run: fn(&Target) -> Outcome,
}

pub(crate) const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "release_proven",
        runs: 1,
        run: release_proven,
    },
    Scenario {
        name: "python_threads_call_in",
        runs: 1,
        run: python_threads_call_in,
    },
    Scenario {
        name: "ensured_rust_thread",
        runs: 1,
        run: ensured_rust_thread,
    },
    Scenario {
        name: "nested",
        runs: 1,
        run: nested,
    },
    Scenario {
        name: "foreign_thread",
        runs: 1,
        run: foreign_thread,
    },
    Scenario {
        name: "foreign_thread_while_released",
        runs: 1,
        run: foreign_thread_while_released,
    },
    Scenario {
        name: "panic_in_block",
        runs: 1,
        run: panic_in_block,
    },
    Scenario {
        name: "before_init",
        runs: 1,
        run: before_init,
    },
    Scenario {
        name: "after_finalize",
        runs: 1,
        run: after_finalize,
    },
    Scenario {
        name: "shutdown_daemon_block_ends",
        runs: 10,
        run: shutdown_daemon_block_ends,
    },
    Scenario {
        name: "shutdown_tight_loop",
        runs: 3,
        run: shutdown_tight_loop,
    },
    Scenario {
        name: "assume_gil_held",
        runs: 1,
        run: assume_gil_held,
    },
    Scenario {
        name: "stop_the_world",
        runs: 1,
        run: stop_the_world,
    },
];
