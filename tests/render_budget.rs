//! Rendering a version's templates is bounded by a budget the request cannot raise: past
//! it, a 400 `template_too_large` and no upstream call.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::Ordering;

use common::*;

/// A flag `bot` serving one version whose template is `template`.
fn with_template(base_url: &str, template: &str) -> String {
    config(
        base_url,
        &format!(
            r#"ai_configs:
  bot:
    versions:
      - version: 3
        provider: up
        model: gpt-x
        messages: [{{role: system, content: "{template}"}}]
flags:
  bot:
    variations: [{{name: only, ai_config: bot, version: 3}}]
    fallthrough: {{variation: only}}
"#
        ),
    )
}

fn list(n: usize) -> String {
    format!(r#"{{"topic":[{}]}}"#, vec!["1"; n].join(","))
}

#[tokio::test]
async fn a_list_rendered_inside_its_own_section_is_refused_before_anything_goes_upstream() {
    // The example config's template: each repetition writes the whole list.
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw =
        gateway(&with_template(&up.base_url(), "Be brief.{{#vars.topic}} Topic: {{vars.topic}}.{{/vars.topic}}")).await;

    let a = send(gw.data_addr, chat("bot", &[("x-sluice-variables", &list(2))], "")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.last().json()["messages"][0]["content"], "Be brief. Topic: [1,1]. Topic: [1,1].");

    // 30,000 elements: 30,000 × 60 KB without a budget (the limit here is 2 KiB).
    let a = send(gw.data_addr, chat("bot", &[("x-sluice-variables", &list(30_000))], "")).await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(a.error_code(), "template_too_large");
    assert_eq!(a.json()["error"]["type"], "invalid_request_error");
    let message = a.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("messages[0] of AI config `bot` version 3"), "{message}");
    assert!(message.contains("exceed 2048 bytes"), "{message}");
    assert_eq!(up.calls.load(Ordering::SeqCst), 1, "the refused request went upstream");
    // The gateway still answers.
    let a = send(gw.data_addr, chat("bot", &[], "")).await;
    assert_eq!(a.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn nested_sections_over_one_list_stop_at_the_repetition_budget() {
    // Output-free, but 30,000² repetitions without a budget (a 60 KB header: under the
    // 64 KiB head limit).
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw =
        gateway(&with_template(&up.base_url(), "{{#vars.topic}}{{#vars.topic}}{{/vars.topic}}{{/vars.topic}}")).await;
    let a = send(gw.data_addr, chat("bot", &[("x-sluice-variables", &list(30_000))], "")).await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(a.error_code(), "template_too_large");
    assert!(a.text().contains("repeat more than 10000 times"), "{}", a.text());
    assert_eq!(up.calls.load(Ordering::SeqCst), 0);
    gw.shutdown().await;
}
