"""The SDK's rules without I/O: slots, keys, routes, strategies, breakers, the attempt
state machine of one command and the plans of batches. Nothing here opens a socket,
sleeps or knows asyncio; :mod:`balancer.sync` and :mod:`balancer.aio` drive it."""
