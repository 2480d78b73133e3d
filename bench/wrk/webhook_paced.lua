-- wrk script: webhook.lua at a fixed request rate.
--
--   wrk -t1 -c16 -d5s -s bench/wrk/webhook_paced.lua URL -- N TAG TOKEN RATE_PER_THREAD
--
-- Each thread sends RATE_PER_THREAD requests/s spread over its connections, on a schedule
-- kept with the monotonic clock (LuaJIT ffi). There is no catch-up: a slot missed because
-- every connection was waiting for an answer is skipped, so a slow server gets less load
-- rather than a burst, and the rate achieved is reported. Latency is measured by wrk from the
-- moment a request is written, so waiting for a free connection is not counted (coordinated
-- omission); with 16 connections at half the maximum rate the connections are mostly idle.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "webhook.lua")

local ffi = require("ffi")
ffi.cdef [[
  struct bench_timespec { long tv_sec; long tv_nsec; };
  int clock_gettime(int clk_id, struct bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("struct bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local base_init = init
local interval_ms, next_slot

function init(args)
  base_init(args)
  interval_ms = 1000 / tonumber(args[4] or "100")
end

function delay()
  local now = now_ms()
  if not next_slot or next_slot < now then
    next_slot = now -- no catch-up
  end
  local wait = next_slot - now
  next_slot = next_slot + interval_ms
  return math.floor(wait + 0.5)
end
