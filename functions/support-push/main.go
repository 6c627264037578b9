// Command support-push is the SupportPushFunction Lambda: on its schedule it works the helpdesk
// queue, creating each portal ticket in Zendesk exactly once. The logic lives in
// shared/helpdesk.
package main

import "github.com/portal-functions/portal-functions/shared/helpdesk"

func main() { helpdesk.PushFunction.Start() }
