-- Argo CD action `rotate`: asks keyward for one rotation now by setting keyward.dev/rotate-now to a new reason.
-- keyward rotates once per distinct reason, so the reason carries the time (UTC, to the second) and, should the
-- action run twice within one second, a counter that makes it differ from the annotation already there.
local key = "keyward.dev/rotate-now"
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
local previous = obj.metadata.annotations[key]
local base = "argocd rotate " .. os.date("!%Y-%m-%dT%H:%M:%SZ")
local reason = base
local n = 1
while reason == previous do
  n = n + 1
  reason = base .. " #" .. n
end
obj.metadata.annotations[key] = reason
return obj
