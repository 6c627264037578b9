// Command reconcile is ReconcileFunction: ops invoke it by hand with a scope as the event
// ({"tenant_id", "from", "to", "apply", "from_stripe"}); it refuses an unscoped or over-wide
// scope (a ScopeError) and otherwise returns the report. The logic is shared/reconcile.
package main

import "github.com/portal-functions/portal-functions/shared/reconcile"

func main() { reconcile.Function.Start() }
