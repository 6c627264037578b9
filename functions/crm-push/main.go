// Command crm-push is the CrmPushFunction Lambda: on its schedule it works the crm queue,
// pushing each tenant's current billing projection to HubSpot (see package crm).
package main

import "github.com/portal-functions/portal-functions/shared/crm"

func main() { crm.PushFunction.Start() }
