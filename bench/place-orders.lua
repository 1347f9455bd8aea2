-- wrk script: small ABAN orders from many users, each a fresh order.
local users = tonumber(os.getenv("LOAD_USERS") or "1000")
local counter = 0

request = function()
  counter = counter + 1
  local user = "load-" .. math.random(1, users)
  local cents = math.random(1, 150)
  local body = string.format('{"coin":"ABAN","amount":"%d.%02d"}', math.floor(cents / 100), cents % 100)
  return wrk.format("POST", "/orders", { ["X-User-Id"] = user, ["Content-Type"] = "application/json" }, body)
end
