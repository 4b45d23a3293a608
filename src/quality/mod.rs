//! Answer quality measured by sluice itself: answers captured off the request path,
//! LLM-as-judge scores, guardrail checks.

pub mod guardrail;
