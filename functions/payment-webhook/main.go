// Command payment-webhook is the Stripe webhook (POST /v1/webhooks/stripe): it verifies each
// delivery and applies it to the billing projection exactly once, in order. The logic lives in
// shared/billing.
package main

import "github.com/portal-functions/portal-functions/shared/billing"

func main() { billing.WebhookFunction.Start() }
