"""Builds deploy/grafana/pushreach.json, the Grafana dashboard over pushreach's metrics.

Edit the panels here, then run `python3 deploy/grafana/build_dashboard.py`; a test fails when the
committed JSON differs from what this builds, and when a panel names a series that a running
server does not export.
"""

import json
import pathlib
import sys
DS = {"type": "prometheus", "uid": "${datasource}"}
panels = []
y = 0
col = 0  # 0 or 12: where the next half-width panel goes
def ts(title, exprs, unit="short", w=12, desc="", stack=False):
    global y, col
    x = col
    p = {
        "type": "timeseries", "title": title, "description": desc, "datasource": DS,
        "gridPos": {"h": 8, "w": w, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"stacking": {"mode": "normal" if stack else "none"}}}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [{"refId": chr(65 + i), "datasource": DS, "expr": e, "legendFormat": l} for i, (e, l) in enumerate(exprs)],
    }
    panels.append(p)
    col = 12 - col
    if col == 0:
        y += 8
    return p
def row(title):
    global y, col
    if col:
        y, col = y + 8, 0
    panels.append({"type": "row", "title": title, "collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
    y += 1
I = '{instance=~"$instance"}'
def sel(extra=""):
    return '{instance=~"$instance"' + ("," + extra if extra else "") + "}"
NOTOK = sel('code!="OK"')
row("API")
ts("RPC rate by method", [(f"sum by (method) (rate(pushreach_rpc_requests_total{I}[$__rate_interval]))", "{{method}}")], "reqps")
ts("RPC errors by code (not OK)", [(f"sum by (code) (rate(pushreach_rpc_requests_total{NOTOK}[$__rate_interval]))", "{{code}}")], "reqps", stack=True)
ts("RPC latency p99 by method", [(f"histogram_quantile(0.99, sum by (method, le) (rate(pushreach_rpc_duration_seconds_bucket{I}[$__rate_interval])))", "{{method}}")], "s")
ts("Store commit latency and batch size", [
    (f"histogram_quantile(0.99, sum by (le) (rate(pushreach_store_commit_duration_seconds_bucket{I}[$__rate_interval])))", "commit p99 (s)"),
    (f"sum(rate(pushreach_store_commit_batch_size_sum{I}[$__rate_interval])) / sum(rate(pushreach_store_commit_batch_size_count{I}[$__rate_interval]))", "writes per commit"),
], "short", desc="p99 of one group-commit transaction, and how many writes share one.")
row("Fallbacks")
ts("Pending fallbacks and backlog", [
    (f"sum(pushreach_fallbacks_pending{I})", "pending (armed)"),
    (f"sum(pushreach_fallbacks_backlog{I})", "backlog (due, not yet fired)"),
], "short", desc="A backlog that stays above 0 means the fire workers fall behind.")
ts("Fire lateness", [
    (f"histogram_quantile(0.5, sum by (le) (rate(pushreach_fallback_fire_lateness_seconds_bucket{I}[$__rate_interval])))", "p50"),
    (f"histogram_quantile(0.99, sum by (le) (rate(pushreach_fallback_fire_lateness_seconds_bucket{I}[$__rate_interval])))", "p99"),
], "s", desc="Seconds between a fallback's due time and its fire.")
ts("Fires and targets without phone", [
    (f"sum(rate(pushreach_fallback_fires_total{I}[$__rate_interval]))", "fires/s"),
    (f"sum(rate(pushreach_fallback_targets_without_phone_total{I}[$__rate_interval]))", "targets without phone/s"),
], "short")
row("SMS")
ts("SMS by outcome", [(f"sum by (outcome) (rate(pushreach_sms_total{I}[$__rate_interval]))", "{{outcome}}")], "short", stack=True,
   desc="Supplementary SMS per second when fallbacks fire: sent, failed, rate_limited, unknown (never resent).")
ts("SMS provider latency p99", [(f"histogram_quantile(0.99, sum by (provider, result, le) (rate(pushreach_sms_provider_duration_seconds_bucket{I}[$__rate_interval])))", "{{provider}} {{result}}")], "s")
ts("SMS provider errors by code", [(f"sum by (provider, code) (rate(pushreach_sms_provider_errors_total{I}[$__rate_interval]))", "{{provider}} {{code}}")], "short", stack=True,
   desc="Provider calls that failed as a whole. AuthFailure.* means the app's Tencent credentials are refused.")
ts("SMS sender attempts and retries", [
    (f"sum(rate(pushreach_sms_provider_attempts_total{I}[$__rate_interval]))", "attempts"),
    (f"sum(rate(pushreach_sms_provider_retries_total{I}[$__rate_interval]))", "retries"),
    (f"sum(rate(pushreach_sms_batches_exhausted_total{I}[$__rate_interval]))", "batches exhausted"),
], "short")
row("Push channels")
ts("Push targets by channel and outcome", [(f"sum by (channel, outcome) (rate(pushreach_push_total{I}[$__rate_interval]))", "{{channel}} {{outcome}}")], "short", stack=True,
   desc="Targets answered per second: accepted, invalid_token (the device is gone), failed (the vendor's code is in GetPush), expired, no_channel (no credentials, or channel_rules).")
ts("Channel send latency p99", [(f"histogram_quantile(0.99, sum by (channel, le) (rate(pushreach_push_channel_seconds_bucket{I}[$__rate_interval])))", "{{channel}}")], "s",
   desc="One channel send of a batch of targets, the channel's own retries included.")
dash = {
    "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}],
    "title": "pushreach", "uid": "pushreach", "tags": ["pushreach"], "timezone": "browser",
    "schemaVersion": 39, "version": 1, "editable": True, "refresh": "30s",
    "time": {"from": "now-6h", "to": "now"},
    "description": "pushreach: API, fallbacks, SMS and push channels. Series documented in docs/OPERATIONS.md.",
    "templating": {"list": [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus", "current": {}, "hide": 0},
        {"name": "instance", "label": "Instance", "type": "query", "datasource": DS, "query": {"query": "label_values(pushreach_rpc_requests_total, instance)", "refId": "instance"},
         "definition": "label_values(pushreach_rpc_requests_total, instance)", "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "current": {}, "hide": 0},
    ]},
    "panels": panels,
}
if __name__ == "__main__":
    # The output path may be given (the drift test builds into a temporary file).
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(__file__).with_name("pushreach.json")
    out.write_text(json.dumps(dash, indent=2) + "\n")
