//! `/metrics` in Prometheus' text format (version 0.0.4).

use std::fmt::Write;

use owl_engine::service::MetricsSnapshot;

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    buckets: &[(f64, u64)],
    sum: f64,
    count: u64,
) {
    header(out, name, "histogram", help);
    for (le, n) in buckets.iter().filter(|(le, _)| le.is_finite()) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {count}");
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the engine's counters and the HTTP layer's answers by (route, status).
pub fn render(m: &MetricsSnapshot, http: &[((String, u16), u64)]) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "owl_http_requests_total",
        "counter",
        "HTTP requests answered, by route and status.",
    );
    for ((route, status), n) in http {
        let _ = writeln!(
            out,
            "owl_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
            escape(route)
        );
    }
    single(
        &mut out,
        "owl_requests_total",
        "counter",
        "Generation requests the engine accepted.",
        m.requests_total,
    );
    single(
        &mut out,
        "owl_requests_cancelled_total",
        "counter",
        "Generation requests cancelled (client gone).",
        m.requests_cancelled,
    );
    single(
        &mut out,
        "owl_prompt_tokens_total",
        "counter",
        "Prompt tokens of accepted requests.",
        m.prompt_tokens_total,
    );
    single(
        &mut out,
        "owl_prompt_tokens_cached_total",
        "counter",
        "Prompt tokens whose KV came from the prefix cache (not evaluated); the rest were prefilled.",
        m.prompt_tokens_cached_total,
    );
    single(
        &mut out,
        "owl_generated_tokens_total",
        "counter",
        "Tokens generated.",
        m.generated_tokens_total,
    );
    single(
        &mut out,
        "owl_queue_depth",
        "gauge",
        "Requests waiting for a sequence slot.",
        m.queue_depth,
    );
    single(
        &mut out,
        "owl_active_sequences",
        "gauge",
        "Sequences being decoded.",
        m.active_sequences,
    );
    single(
        &mut out,
        "owl_kv_pages_used",
        "gauge",
        "KV cache pages in use.",
        m.kv_pages_used,
    );
    single(
        &mut out,
        "owl_kv_pages_total",
        "gauge",
        "KV cache pages in the budget.",
        m.kv_pages_total,
    );
    single(
        &mut out,
        "owl_kv_page_size_tokens",
        "gauge",
        "Tokens per KV cache page.",
        m.kv_page_size,
    );
    histogram(
        &mut out,
        "owl_time_to_first_token_seconds",
        "Time from submit to the first generated token.",
        &m.ttft_buckets,
        m.ttft_sum,
        m.ttft_count,
    );
    histogram(
        &mut out,
        "owl_inter_token_latency_seconds",
        "Time between generated tokens.",
        &m.itl_buckets,
        m.itl_sum,
        m.itl_count,
    );
    out
}

/// The gauges autoscalers and endpoint pickers read from vLLM (KEDA on queue
/// depth in vLLM's production stack, the Gateway API Inference Extension's
/// endpoint picker, llm-d), under vLLM's names and its `model_name` label.
/// `kv_cache_usage_perc` is a fraction in [0, 1], as vLLM reports it.
pub fn render_vllm(m: &MetricsSnapshot, model: &str) -> String {
    let mut out = String::new();
    let label = format!("{{model_name=\"{}\"}}", escape(model));
    let usage = if m.kv_pages_total == 0 {
        0.0
    } else {
        m.kv_pages_used as f64 / m.kv_pages_total as f64
    };
    let gauges: [(&str, &str, String); 3] = [
        (
            "vllm:num_requests_waiting",
            "Requests waiting for a sequence slot (owl_queue_depth).",
            m.queue_depth.to_string(),
        ),
        (
            "vllm:num_requests_running",
            "Requests being decoded (owl_active_sequences).",
            m.active_sequences.to_string(),
        ),
        (
            "vllm:kv_cache_usage_perc",
            "Fraction of the KV cache in use, 0 to 1 (owl_kv_pages_used / owl_kv_pages_total).",
            usage.to_string(),
        ),
    ];
    for (name, help, value) in gauges {
        header(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name}{label} {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_vllm_gauges() {
        let m = MetricsSnapshot {
            queue_depth: 3,
            active_sequences: 2,
            kv_pages_used: 5,
            kv_pages_total: 20,
            ..Default::default()
        };
        let text = render_vllm(&m, "smol\"lm");
        assert!(
            text.contains("# TYPE vllm:num_requests_waiting gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("\nvllm:num_requests_waiting{model_name=\"smol\\\"lm\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("\nvllm:num_requests_running{model_name=\"smol\\\"lm\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("\nvllm:kv_cache_usage_perc{model_name=\"smol\\\"lm\"} 0.25\n"),
            "{text}"
        );
        // No KV budget yet reads as empty, never NaN.
        let empty = render_vllm(&MetricsSnapshot::default(), "m");
        assert!(
            empty.contains("vllm:kv_cache_usage_perc{model_name=\"m\"} 0\n"),
            "{empty}"
        );
    }

    #[test]
    fn renders_prometheus_text() {
        let m = MetricsSnapshot {
            requests_total: 3,
            active_sequences: 2,
            kv_pages_used: 5,
            ttft_buckets: vec![(0.1, 1), (1.0, 2)],
            ttft_sum: 0.9,
            ttft_count: 3,
            ..Default::default()
        };
        let text = render(
            &m,
            &[
                (("/v1/completions".into(), 200), 4),
                (("/v1/completions".into(), 400), 1),
            ],
        );
        assert!(
            text.contains("owl_http_requests_total{route=\"/v1/completions\",status=\"400\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("\nowl_requests_total 3\n"));
        assert!(text.contains("\nowl_active_sequences 2\n"));
        assert!(text.contains("\nowl_kv_pages_used 5\n"));
        assert!(text.contains("owl_time_to_first_token_seconds_bucket{le=\"0.1\"} 1\n"));
        assert!(text.contains("owl_time_to_first_token_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("owl_inter_token_latency_seconds_count 0\n"));
        // Every sample line is `name{labels} value` with a numeric value.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
