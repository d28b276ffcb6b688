-- Argo CD health of a keyward.dev ManagedSecret (resource.customizations.health.keyward.dev_ManagedSecret).
-- Written for Argo CD's sandbox: base and table libraries and os.time/os.date only (no string library).
--
--   Progressing  keyward has not reconciled this generation yet; a rotation is due or running; consumers are
--                still restarting onto the current value
--   Degraded     Degraded=True (a consumer's rollout failed and the previous value is held); Ready=False (the
--                Secret does not match the source: the reason says why); a rotation is overdue because rotating
--                fails (Generate, Esc); a consumer failed to roll out
--   Suspended    a rotation is overdue under strategy Notify: keyward waits for a person to replace the value
--                in the source (the Secret itself is in sync; the KeywardRotationOverdue alert pages for it)
--   Healthy      Ready=True and none of the above
local hs = {}

local function condition(conditions, type_)
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  local text = fallback
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    text = c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason .. ": " .. text
  end
  return text
end

local status = obj.status
if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for keyward to reconcile"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for keyward to reconcile generation " .. generation
  return hs
end

local conditions = status.conditions
local strategy = "Notify"
if obj.spec ~= nil and obj.spec.rotation ~= nil and obj.spec.rotation.strategy ~= nil then
  strategy = obj.spec.rotation.strategy
end

local degraded = condition(conditions, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(degraded, "Degraded")
  return hs
end

local ready = condition(conditions, "Ready")
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready, "The Secret does not match its source")
  return hs
end

local overdue = condition(conditions, "RotationOverdue")
if overdue ~= nil and overdue.status == "True" then
  if strategy == "Notify" then
    hs.status = "Suspended"
  else
    hs.status = "Degraded"
  end
  hs.message = describe(overdue, "Rotation overdue")
  return hs
end

local consumers = condition(conditions, "ConsumersUpdated")
if consumers ~= nil and consumers.status == "False" and consumers.reason == "RolloutFailed" then
  hs.status = "Degraded"
  hs.message = describe(consumers, "A consumer failed to roll out")
  return hs
end

if status.rotation ~= nil and status.rotation.inProgress ~= nil then
  local reason = status.rotation.inProgress.reason
  if reason == nil then
    reason = "scheduled"
  end
  hs.status = "Progressing"
  hs.message = "Rotating (" .. reason .. ")"
  return hs
end

local due = condition(conditions, "RotationDue")
if due ~= nil and due.status == "True" and strategy ~= "Notify" then
  hs.status = "Progressing"
  hs.message = describe(due, "Rotation due")
  return hs
end

if consumers ~= nil and consumers.status == "False" then
  hs.status = "Progressing"
  hs.message = describe(consumers, "Consumers are restarting")
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for keyward to report Ready"
  return hs
end

hs.status = "Healthy"
hs.message = describe(ready, "Ready")
return hs
