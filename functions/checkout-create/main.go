// Command checkout-create starts a Stripe subscription checkout for the caller's tenant
// (POST /v1/checkout-sessions). The wiring lives in shared/checkout, the logic in shared/billing.
package main

import "github.com/portal-functions/portal-functions/shared/checkout"

func main() { checkout.Function.Start() }
