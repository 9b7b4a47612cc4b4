-- check-duo for HAProxy 2.6+: asks check-duo serve's /api/authz/forward-auth about a request
-- with HAProxy's own Lua HTTP client (core.httpclient, no haproxy-lua-http needed) and leaves
-- the answer in variables for haproxy.cfg:
--   txn.check_duo_status   the status (200: let it through; 0: no answer)
--   txn.check_duo_location the Location of a 302/303 (the portal)
--   txn.check_duo_user     the Remote-User of a 200
--   txn.check_duo_groups, txn.check_duo_name, txn.check_duo_email
--                          its Remote-Groups, Remote-Name and Remote-Email, where it has them
-- The daemon's URL comes from the environment variable CHECK_DUO_URL (haproxy.cfg: setenv).

local url = os.getenv("CHECK_DUO_URL") or "http://127.0.0.1:9091/api/authz/forward-auth"

local function first(headers, name)
  local v = headers and headers[name]
  if type(v) == "table" then
    for _, x in pairs(v) do return x end
    return nil
  end
  return v
end

core.register_action("check-duo", { "http-req" }, function(txn)
  local f = txn.f
  local h = {
    ["x-forwarded-proto"] = { f:ssl_fc() == 1 and "https" or "http" },
    ["x-forwarded-host"] = { f:req_hdr("host") or "" },
    ["x-forwarded-uri"] = { f:pathq() or "/" },
    ["x-forwarded-method"] = { f:method() or "GET" },
    ["x-forwarded-for"] = { f:src() or "" },
  }
  for _, name in ipairs({ "cookie", "accept", "x-requested-with", "user-agent" }) do
    local v = f:req_hdr(name)
    if v ~= nil and v ~= "" then h[name] = { v } end
  end
  txn:set_var("txn.check_duo_status", 0)
  local ok, res = pcall(function()
    return core.httpclient():get({ url = url, headers = h, timeout = 5000 })
  end)
  if not ok or res == nil or res.status == nil then
    return
  end
  txn:set_var("txn.check_duo_status", res.status)
  local loc = first(res.headers, "location")
  if loc then txn:set_var("txn.check_duo_location", loc) end
  for header, var in pairs({ ["remote-user"] = "user", ["remote-groups"] = "groups",
                             ["remote-name"] = "name", ["remote-email"] = "email" }) do
    local v = first(res.headers, header)
    if v then txn:set_var("txn.check_duo_" .. var, v) end
  end
end, 0)
