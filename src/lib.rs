//! sluice: a self-hosted, OpenAI-compatible LLM gateway for changing prompts and models
//! in production safely.
//!
//! # Layout
//!
//! Read this file, then [`proxy`] (the request pipeline), then [`server`].
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the YAML file format, `${VAR}` interpolation, validation with `file:line:col` errors |
//! | [`snapshot`] | the immutable, precompiled view of the config one request uses (behind `ArcSwap`) |
//! | [`auth`] | gateway keys: SHA-256 digests compared in constant time |
//! | [`proxy`] | the data-plane pipeline, OpenAI-style errors, the streaming body wrapper |
//! | [`providers`] | upstream clients (hyper-util + hyper-rustls) and provider kinds |
//! | [`mock`] | the built-in fake provider, OpenAI, Anthropic or Azure shaped (`sluice mock-provider --kind`; kind `mock` in-process, OpenAI shaped) |
//! | [`server`] | listeners (connection caps, accept back-off), one connection's limits (idle close, stalled readers), TLS termination, the admin listener, graceful shutdown and its deadline |
//! | [`state`] | the runtime documents and their revision, the one write path, the state directory (`state.json`, the audit log) and its repairs |
//! | [`cli`] | the `sluice` subcommands |
//! | [`body`] | the one response body type |

pub mod admin;
pub mod aiconfig;
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod flags;
pub mod guard;
pub mod metrics;
pub mod mock;
pub mod providers;
pub mod proxy;
pub mod server;
pub mod snapshot;
pub mod sse_event;
pub mod state;
pub mod worker;
