-- Argo CD action `refresh`: keyward reads the source again at once when keyward.dev/refresh-now changes.
local key = "keyward.dev/refresh-now"
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
local previous = obj.metadata.annotations[key]
local base = "argocd " .. os.date("!%Y-%m-%dT%H:%M:%SZ")
local request = base
local n = 1
while request == previous do
  n = n + 1
  request = base .. " #" .. n
end
obj.metadata.annotations[key] = request
return obj
