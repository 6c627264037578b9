// Command ticket-create is the TicketCreateFunction Lambda (POST /v1/tickets): it creates one
// support ticket per request for the caller's tenant and queues its helpdesk push. The logic
// lives in shared/ticket.
package main

import "github.com/portal-functions/portal-functions/shared/ticket"

func main() { ticket.CreateFunction.Start() }
