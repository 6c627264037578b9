// Command checkout-create starts a Stripe subscription checkout for the caller's tenant
// (POST /v1/checkout-sessions). The logic lives in shared/billing.
package main

import "github.com/portal-functions/portal-functions/shared/billing"

func main() { billing.CheckoutFunction.Start() }
