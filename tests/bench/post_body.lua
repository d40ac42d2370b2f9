-- wrk script: POST a realistic 3-alert Alertmanager 0.25 webhook body to /v1/alertmanager.
--
-- Every request carries 3 new alerts (own instance label and fingerprint), so a receiver that
-- deduplicates repeats cannot skip the work. The shape follows tests/e2e/captured/am-0.25_firing.json.
-- done() prints one line "BENCH_JSON {...}" with exact figures for bench_intake.py.

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)  -- a global of that thread's Lua state
end

local tid = 0
local counter = 0
local path = "/v1/alertmanager"
local headers = {["Content-Type"] = "application/json", ["User-Agent"] = "Alertmanager/0.25.0"}

function init(args)
  tid = thread_id or 0
end

local alert_fmt = '{"status":"firing","labels":{"alertname":"NodeFilesystemAlmostFull",'
  .. '"cluster":"eu-west-1","device":"/dev/nvme0n1p1","fstype":"ext4","instance":"%s",'
  .. '"job":"node","mountpoint":"/var/lib/postgresql","severity":"critical","team":"storage"},'
  .. '"annotations":{"description":"Only 3.1%% of /var/lib/postgresql is free on %s.",'
  .. '"runbook_url":"https://runbooks.example.com/node/NodeFilesystemAlmostFull",'
  .. '"summary":"Filesystem /var/lib/postgresql on %s has less than 5%% space left"},'
  .. '"startsAt":"2026-11-25T16:54:52.112179Z","endsAt":"0001-01-01T00:00:00Z",'
  .. '"generatorURL":"http://prometheus.example:9090/graph?g0.expr=node_filesystem_avail_bytes&g0.tab=1",'
  .. '"fingerprint":"%s"}'

local tail = '],"groupLabels":{"alertname":"NodeFilesystemAlmostFull","cluster":"eu-west-1"},'
  .. '"commonLabels":{"alertname":"NodeFilesystemAlmostFull","cluster":"eu-west-1",'
  .. '"device":"/dev/nvme0n1p1","fstype":"ext4","job":"node","mountpoint":"/var/lib/postgresql",'
  .. '"severity":"critical","team":"storage"},'
  .. '"commonAnnotations":{"runbook_url":"https://runbooks.example.com/node/NodeFilesystemAlmostFull"},'
  .. '"externalURL":"http://alertmanager.example:9093","version":"4",'
  .. '"groupKey":"{}/{team=\\"storage\\"}:{alertname=\\"NodeFilesystemAlmostFull\\", cluster=\\"eu-west-1\\"}",'
  .. '"truncatedAlerts":0}\n'

function request()
  counter = counter + 1
  local alerts = {}
  for i = 1, 3 do
    local instance = string.format("db-%d-%d-%d.example.com:9100", tid, counter, i)
    local fingerprint = string.format("%02x%02x%012x", tid % 256, i, counter)
    alerts[i] = string.format(alert_fmt, instance, instance, instance, fingerprint)
  end
  local body = '{"receiver":"pdrelay","status":"firing","alerts":[' .. table.concat(alerts, ",") .. tail
  return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,'
      .. '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
