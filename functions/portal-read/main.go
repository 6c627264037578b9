// Command portal-read is the PortalReadFunction Lambda (GET /v1/account, GET /v1/tickets,
// GET /v1/tickets/{id}): what the client portal reads, as the calling user so RLS applies;
// and GET /v1/health, the uptime probe's. The logic lives in shared/portal.
package main

import "github.com/portal-functions/portal-functions/shared/portal"

func main() { portal.ReadFunction.Start() }
