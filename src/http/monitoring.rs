//! `/metrics`, `/healthz` and `/readyz`.

use super::routes::{json, Answer};
use crate::daemon::Daemon;
use authenta_client::proto::HealthReport;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use std::time::{Duration, Instant};

/// The metrics in the text format (OpenMetrics, which Prometheus reads).
pub fn metrics(daemon: &Daemon) -> Answer {
    daemon.refresh_metrics();
    let mut answer = Response::new(Full::new(Bytes::from(daemon.metrics.encode())));
    answer.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    answer
}

/// The process is alive and its HTTP side answers.
pub fn alive() -> Answer {
    json(StatusCode::OK, &serde_json::json!({ "status": "alive" }))
}

/// How long one readiness check answers `/readyz`: the check asks the store thread, which
/// callers who can reach the HTTP side must not be able to keep busy.
const READY_FOR: Duration = Duration::from_secs(1);

/// 200 when ready (see [`crate::daemon::health`]), else 503, with what is wrong.
pub async fn ready(daemon: &Daemon) -> Answer {
    let report = recent_check(daemon).await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "ready": report.ready,
        "store": report.store,
        "policy": report.policy,
        "fleet_connected": report.fleet_connected,
        "problems": report.problems,
    });
    json(status, &body)
}

/// The readiness checked at most [`READY_FOR`] ago; callers arriving during a check wait
/// for it rather than start their own.
async fn recent_check(daemon: &Daemon) -> HealthReport {
    let mut last = daemon.readiness.lock().await;
    match &*last {
        Some((at, report)) if at.elapsed() < READY_FOR => report.clone(),
        _ => {
            let report = crate::daemon::health::check(daemon).await;
            *last = Some((Instant::now(), report.clone()));
            report
        }
    }
}
