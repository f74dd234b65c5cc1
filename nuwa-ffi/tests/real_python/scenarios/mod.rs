//! The scenarios, by theme; each runs in its own child process.

use crate::harness::{Outcome, Target};

mod breaker;
mod breaker_parts;
mod embedding;
mod foreign;
mod free_threaded;
mod panics;
mod reattach;
mod release;
mod repair;
pub(crate) mod shutdown;
mod signals;
mod stats;
mod subinterpreters;

use breaker::*;
use breaker_parts::*;
use embedding::*;
use foreign::*;
use free_threaded::*;
use panics::*;
use reattach::*;
use release::*;
use repair::*;
use shutdown::*;
use signals::*;
use stats::*;
use subinterpreters::*;

/// A scenario: its name, how many children run it, and its body.
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    /// How many children run it (each must pass).
    pub(crate) runs: u32,
    pub(crate) run: fn(&Target) -> Outcome,
    /// It needs the embedding hosts (built by the runner first).
    pub(crate) hosts: bool,
}

pub(crate) const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "shutdown_in_part_of_kept_gil_block",
        runs: 3,
        run: shutdown_in_part_of_kept_gil_block,
        hosts: false,
    },
    Scenario {
        name: "breaker_part_locals_not_unwound_at_shutdown",
        runs: 1,
        run: breaker_part_locals_not_unwound_at_shutdown,
        hosts: false,
    },
    Scenario {
        name: "release_proven",
        runs: 1,
        run: release_proven,
        hosts: false,
    },
    Scenario {
        name: "python_threads_call_in",
        runs: 1,
        run: python_threads_call_in,
        hosts: false,
    },
    Scenario {
        name: "ensured_rust_thread",
        runs: 1,
        run: ensured_rust_thread,
        hosts: false,
    },
    Scenario {
        name: "nested",
        runs: 1,
        run: nested,
        hosts: false,
    },
    Scenario {
        name: "foreign_thread",
        runs: 1,
        run: foreign_thread,
        hosts: false,
    },
    Scenario {
        name: "foreign_thread_while_released",
        runs: 1,
        run: foreign_thread_while_released,
        hosts: false,
    },
    Scenario {
        name: "panic_in_block",
        runs: 1,
        run: panic_in_block,
        hosts: false,
    },
    Scenario {
        name: "before_init",
        runs: 1,
        run: before_init,
        hosts: false,
    },
    Scenario {
        name: "after_finalize",
        runs: 1,
        run: after_finalize,
        hosts: false,
    },
    Scenario {
        name: "shutdown_daemon_block_ends",
        runs: 10,
        run: shutdown_daemon_block_ends,
        hosts: false,
    },
    Scenario {
        name: "shutdown_tight_loop",
        runs: 3,
        run: shutdown_tight_loop,
        hosts: false,
    },
    Scenario {
        name: "pause_probe",
        runs: 1,
        run: pause_probe,
        hosts: false,
    },
    Scenario {
        name: "shutdown_in_with_gil_part",
        runs: 3,
        run: shutdown_in_with_gil_part,
        hosts: false,
    },
    Scenario {
        name: "shutdown_in_released_part",
        runs: 3,
        run: shutdown_in_released_part,
        hosts: false,
    },
    Scenario {
        name: "shutdown_in_strict_part",
        runs: 3,
        run: shutdown_in_strict_part,
        hosts: false,
    },
    Scenario {
        name: "gil_held_token",
        runs: 1,
        run: gil_held_token,
        hosts: false,
    },
    Scenario {
        name: "stop_the_world",
        runs: 1,
        run: stop_the_world,
        hosts: false,
    },
    Scenario {
        name: "rtld_local_host",
        runs: 1,
        run: rtld_local_host,
        hosts: true,
    },
    Scenario {
        name: "static_embedding",
        runs: 1,
        run: static_embedding,
        hosts: true,
    },
    Scenario {
        name: "static_embedding_fully_static",
        runs: 1,
        run: static_embedding_fully_static,
        hosts: true,
    },
    Scenario {
        name: "static_embedding_version_race",
        runs: 1,
        run: static_embedding_version_race,
        hosts: true,
    },
    Scenario {
        name: "python_loaded_after_a_block",
        runs: 1,
        run: python_loaded_after_a_block,
        hosts: false,
    },
    Scenario {
        name: "dlclose_then_block",
        runs: 1,
        run: dlclose_then_block,
        hosts: false,
    },
    Scenario {
        name: "dlclose_unloads_without_nuwa",
        runs: 1,
        run: dlclose_unloads_without_nuwa,
        hosts: false,
    },
    Scenario {
        name: "nested_blocks_while_threads_churn",
        runs: 1,
        run: nested_blocks_while_threads_churn,
        hosts: false,
    },
    Scenario {
        name: "legacy_subinterpreter",
        runs: 1,
        run: legacy_subinterpreter,
        hosts: false,
    },
    Scenario {
        name: "state_made_for_another_thread",
        runs: 1,
        run: state_made_for_another_thread,
        hosts: false,
    },
    Scenario {
        name: "state_made_by_a_python_thread",
        runs: 1,
        run: state_made_by_a_python_thread,
        hosts: false,
    },
    Scenario {
        name: "state_made_by_a_thread_that_ended",
        runs: 1,
        run: state_made_by_a_thread_that_ended,
        hosts: false,
    },
    Scenario {
        name: "state_attached_in_block",
        runs: 1,
        run: state_attached_in_block,
        hosts: false,
    },
    Scenario {
        name: "state_attached_before_a_part",
        runs: 1,
        run: state_attached_before_a_part,
        hosts: false,
    },
    Scenario {
        name: "stats_count_blocks_nuwa_panics_in",
        runs: 1,
        run: stats_count_blocks_nuwa_panics_in,
        hosts: false,
    },
    Scenario {
        name: "stats_fork_while_a_thread_is_in_the_registry",
        runs: 1,
        run: stats_fork_while_a_thread_is_in_the_registry,
        hosts: false,
    },
    Scenario {
        name: "state_attached_while_panicking",
        runs: 1,
        run: state_attached_while_panicking,
        hosts: false,
    },
    Scenario {
        name: "state_attached_in_subinterpreter_block",
        runs: 1,
        run: state_attached_in_subinterpreter_block,
        hosts: false,
    },
    Scenario {
        name: "foreign_state_attached_in_block",
        runs: 1,
        run: foreign_state_attached_in_block,
        hosts: false,
    },
    Scenario {
        name: "own_gil_subinterpreter_left_in_block",
        runs: 1,
        run: own_gil_subinterpreter_left_in_block,
        hosts: false,
    },
    Scenario {
        name: "foreign_state_left_before_a_part",
        runs: 1,
        run: foreign_state_left_before_a_part,
        hosts: false,
    },
    Scenario {
        name: "foreign_state_left_in_block_nested_in_part",
        runs: 1,
        run: foreign_state_left_in_block_nested_in_part,
        hosts: false,
    },
    Scenario {
        name: "main_state_left_in_own_gil_subinterpreter_block",
        runs: 1,
        run: main_state_left_in_own_gil_subinterpreter_block,
        hosts: false,
    },
    Scenario {
        name: "signal_check_stops_a_block",
        runs: 1,
        run: signal_check_stops_a_block,
        hosts: false,
    },
    Scenario {
        name: "with_gil_restores_the_saved_state",
        runs: 1,
        run: with_gil_restores_the_saved_state,
        hosts: false,
    },
    Scenario {
        name: "breaker_migrated_state",
        runs: 1,
        run: breaker_migrated_state,
        hosts: false,
    },
    Scenario {
        name: "breaker_stack_inside_callers",
        runs: 1,
        run: breaker_stack_inside_callers,
        hosts: false,
    },
    Scenario {
        name: "breaker_token_in_subinterpreter",
        runs: 1,
        run: breaker_token_in_subinterpreter,
        hosts: false,
    },
    Scenario {
        name: "breaker_subinterp_cost",
        runs: 1,
        run: breaker_subinterp_cost,
        hosts: false,
    },
    Scenario {
        name: "breaker_migrated_own_state",
        runs: 1,
        run: breaker_migrated_own_state,
        hosts: false,
    },
    Scenario {
        name: "breaker_states_freed_under_the_check",
        runs: 1,
        run: breaker_states_freed_under_the_check,
        hosts: false,
    },
    Scenario {
        name: "breaker_signal_in_first_check",
        runs: 1,
        run: breaker_signal_in_first_check,
        hosts: false,
    },
];

/// Scenarios that other scenarios run in a child of their own; the runner
/// does not list them.
pub(crate) const HELPERS: &[Scenario] = &[Scenario {
    name: "attached_while_panicking_child",
    runs: 1,
    run: attached_while_panicking_child,
    hosts: false,
}];
