// Command billing-refresh is the BillingRefreshFunction Lambda: on its schedule it works the
// billing queue, reading from Stripe the subscriptions whose same-second events could not be
// ordered and applying what Stripe says (see package billing).
package main

import "github.com/portal-functions/portal-functions/shared/billing"

func main() { billing.RefreshFunction.Start() }
