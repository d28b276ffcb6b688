-- Argo CD actions of a keyward.dev ManagedSecret: `rotate` (keyward.dev/rotate-now) and `refresh`
-- (keyward.dev/refresh-now). Rotating is disabled where keyward cannot rotate: strategy Notify (the default).
local actions = {}
local strategy = "Notify"
if obj.spec ~= nil and obj.spec.rotation ~= nil and obj.spec.rotation.strategy ~= nil then
  strategy = obj.spec.rotation.strategy
end
actions["rotate"] = {["disabled"] = strategy == "Notify"}
actions["refresh"] = {["disabled"] = false}
return actions
