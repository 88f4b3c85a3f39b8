-- Argo CD health check for oos.chatops.dev/v1alpha1 ChatConfiguration.
-- Input: `obj` (the live object). Output: {status = ..., message = ...}.
--   Healthy     Ready=True and status.observedGeneration == metadata.generation
--   Degraded    Stalled=True (needs a human: invalid spec or credentials, a conflict)
--   Suspended   the oos.chatops.dev/paused annotation is "true"
--   Progressing anything else: not observed yet, an older generation, work or a retry in
--               flight, a referenced Secret awaited
-- Lua 5.1 compatible (Argo CD's interpreter); tests/gitops_health.rs runs it on real objects.
local hs = {}

local function describe(c)
  local text = c.type .. "=" .. tostring(c.status)
  if c.reason ~= nil and c.reason ~= "" then
    text = text .. " (" .. c.reason .. ")"
  end
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local annotations = obj.metadata.annotations
if annotations ~= nil and annotations["oos.chatops.dev/paused"] == "true" then
  hs.status = "Suspended"
  hs.message = "Reconciliation paused (annotation oos.chatops.dev/paused)"
  return hs
end

local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local ready, stalled, reconciling
for _, c in ipairs(status.conditions) do
  if c.type == "Ready" then
    ready = c
  elseif c.type == "Stalled" then
    stalled = c
  elseif c.type == "Reconciling" then
    reconciling = c
  end
end

local generation = obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed ~= generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation) ..
    " (observed: " .. tostring(observed) .. ")"
  return hs
end

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end

hs.status = "Progressing"
-- Ready says what is awaited (e.g. which Secret); Reconciling what is being done.
if ready ~= nil then
  hs.message = describe(ready)
elseif reconciling ~= nil then
  hs.message = describe(reconciling)
else
  hs.message = "Waiting for the Ready condition"
end
return hs
