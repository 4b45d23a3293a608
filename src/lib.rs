//! sluice: a self-hosted, OpenAI-compatible LLM gateway for changing prompts and models
//! in production safely.
//!
//! # Layout
//!
//! Read this file, then [`proxy`] (the request pipeline), then [`server`].
//!
//! Every module, ground floor first: each uses only the ones listed before it
//! (`tests/layers.rs` checks it; ARCHITECTURE.md's code map says what each must never do):
//!
//! The fake provider is its own crate of the workspace, `sluice-mock` (`crates/mock`): the
//! gateway's provider kind `mock` calls it in-process and `sluice mock-provider` serves it.
//!
//! | module | owns |
//! |---|---|
//! | [`wire`] | the ground floor: the one response body type and its JSON/text helpers (`wire::body`), SSE events as bytes (`wire::sse_event`: the splitter — LF, CRLF, CR; at most 1 MiB an event — and `data` fields), the OpenAI endpoints, Azure's URL forms, the request body read and spliced as raw JSON |
//! | [`worker`] | which data-plane worker thread the code runs on; per-worker state; the worker's shutdown cut signal |
//! | [`keys`] | key digests (SHA-256), the one key ring (gateway keys, admin tokens), configured keys read one way, the one bearer parser |
//! | [`token`] | response tokens: the signed, self-describing id a routed response carries so that later feedback lands on its arm |
//! | [`stats`] | the statistics: log-scale moments kept as integers, the mSPRT (estimates, always-valid intervals, Λ, decisions) |
//! | [`flags`] | LaunchDarkly-semantics targeting: contexts, compiled flags and segments, evaluation, explanations |
//! | [`config`] | the YAML file format, `${VAR}` interpolation, validation with `file:line:col` errors |
//! | [`auth`] | the clients (apps): gateway keys compared in constant time, each app's context and template values |
//! | [`metrics`] | Prometheus families per route and variation, how a request ended (`Outcome`), the guards' per-arm statistics, their recent history for the console's charts (`metrics::history`) |
//! | [`providers`] | upstream connection pools (hyper + hyper-rustls) and provider kinds (OpenAI, Azure, Anthropic, mock) |
//! | [`quality`] | answer quality: answers captured for sampled requests, LLM-as-judge calls on their own thread, guardrail checks |
//! | [`aiconfig`] | AI config versions compiled: the Mustache templates, rendering within a budget, the body edits (an agent's instructions and tools among them) |
//! | [`snapshot`] | the immutable, precompiled view of the config one request uses (behind `ArcSwap`) |
//! | [`gateway`] | the running gateway's shared state: the current snapshot, the metrics, draining |
//! | [`proxy`] | the data-plane pipeline, OpenAI-style errors, the streaming body wrapper, feedback, OpenFeature remote evaluation (`proxy::ofrep`) |
//! | [`state`] | the runtime documents and their revision, the one write path, the state directory (`state.json`, the audit log) and its repairs |
//! | [`fleet`] | the fleet store (`state.store: redis`): one Lua compare-and-set per change, the change log followed on a thread of its own, seeding, the local copy, the fleet-wide feedback de-duplication set |
//! | [`guard`] | guarded releases: the mSPRT tests, the guard task (checks on an injected clock, trips, ramp steps, webhooks) |
//! | [`experiment`] | experiments: a flag's `experiment:` read against its arms' statistics in the current iteration — results, sample-ratio checks, the recommendation |
//! | [`admin`] | the admin API: tokens and roles, changes through `state` (or checked only, `?dry_run=true`), the audit log, evaluating a flag against the running state, a flag's time series; its typed contract (`admin::api`), shared with `sluice ctl`; the web console's embedded pages (`admin::ui`, under `/ui/`) |
//! | [`server`] | listeners (connection caps, accept back-off), one connection's limits (idle close, stalled readers), TLS termination, the admin listener, graceful shutdown and its deadline |
//! | [`cli`] | the `sluice` subcommands |

pub mod admin;
pub mod aiconfig;
pub mod auth;
pub mod cli;
pub mod config;
pub mod experiment;
pub mod flags;
pub mod fleet;
pub mod gateway;
pub mod guard;
pub mod keys;
pub mod metrics;
pub mod providers;
pub mod proxy;
pub mod quality;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod stats;
pub mod token;
pub mod wire;
pub mod worker;
