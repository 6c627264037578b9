package reconcile

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// Kinds of thing a run looks at, in report order.
const (
	// KindStripeEvent: a stored Stripe event never applied, or unmatched and now matching.
	KindStripeEvent = "stripe_event"
	// KindStripeMissing: an event Stripe lists that we never received (--from-stripe).
	KindStripeMissing = "stripe_missing"
	// KindCRMSync: a billing change whose CRM push is missing or dead-lettered.
	KindCRMSync = "crm_sync"
	// KindHelpdeskTicket: a ticket not in the helpdesk whose push is missing or dead-lettered.
	KindHelpdeskTicket = "helpdesk_ticket"
)

// Actions an item can get.
const (
	ActionApply   = "apply"   // apply a stored event through the webhook's path
	ActionIngest  = "ingest"  // store and apply an event fetched from Stripe
	ActionEnqueue = "enqueue" // enqueue the missing push
	ActionNone    = "none"    // nothing this tool can do (see the reason)
)

// Results of an item.
const (
	ResultWould   = "would"   // dry run: the action was not taken
	ResultDone    = "done"    // the action was taken
	ResultSkipped = "skipped" // nothing to do, for the reason given
	ResultFailed  = "failed"  // needs attention: the action could not be taken (see the reason)
)

// Item is one thing that needed a repair, what was (or would be) done and why.
type Item struct {
	Kind     string `json:"kind"`
	Subject  string `json:"subject"` // event id or ticket id
	TenantID string `json:"tenant_id,omitempty"`
	Action   string `json:"action"`
	Result   string `json:"result"`
	Reason   string `json:"reason,omitempty"`
}

// Attention reports whether the item needs a person: its repair failed or no repair exists.
func (i Item) Attention() bool { return i.Result == ResultFailed }

// Count is one kind's tally. Found = Fine + Enqueued + Skipped + Failed.
type Count struct {
	Kind string `json:"kind"`
	// Found is everything in scope that was looked at.
	Found int `json:"found"`
	// Fine already had what it needs (a live job, a later push, an applied event).
	Fine int `json:"already_fine"`
	// Enqueued were repaired (or, in a dry run, would be): applied, ingested or enqueued.
	Enqueued int `json:"enqueued"`
	// Skipped needed nothing from this run, for the reasons in SkippedWhy.
	Skipped    int            `json:"skipped"`
	SkippedWhy map[string]int `json:"skipped_why,omitempty"`
	// Failed needed a repair that could not be made, for the reasons in FailedWhy.
	Failed    int            `json:"failed"`
	FailedWhy map[string]int `json:"failed_why,omitempty"`
}

// Report is what one run found and did.
type Report struct {
	Scope  Scope   `json:"scope"`
	DryRun bool    `json:"dry_run"`
	Counts []Count `json:"counts"`
	// Items lists every item that was (or would be) repaired, skipped or failed; fine ones are
	// only counted.
	Items []Item `json:"items"`
}

func newReport(o Options) *Report {
	r := &Report{Scope: o.Scope, DryRun: !o.Apply, Items: []Item{}}
	kinds := []string{KindStripeEvent}
	if o.FromStripe {
		kinds = append(kinds, KindStripeMissing)
	}
	kinds = append(kinds, KindCRMSync, KindHelpdeskTicket)
	for _, k := range kinds {
		r.Counts = append(r.Counts, Count{Kind: k})
	}
	return r
}

func (r *Report) count(kind string) *Count {
	for i := range r.Counts {
		if r.Counts[i].Kind == kind {
			return &r.Counts[i]
		}
	}
	r.Counts = append(r.Counts, Count{Kind: kind})
	return &r.Counts[len(r.Counts)-1]
}

// fine tallies an item that needs nothing.
func (r *Report) fine(kind string) {
	c := r.count(kind)
	c.Found++
	c.Fine++
}

// add tallies an item that needed something and records it.
func (r *Report) add(it Item) {
	c := r.count(it.Kind)
	c.Found++
	switch it.Result {
	case ResultWould, ResultDone:
		c.Enqueued++
	case ResultSkipped:
		c.Skipped++
		if c.SkippedWhy == nil {
			c.SkippedWhy = map[string]int{}
		}
		c.SkippedWhy[it.Reason]++
	default:
		c.Failed++
		if c.FailedWhy == nil {
			c.FailedWhy = map[string]int{}
		}
		c.FailedWhy[it.Reason]++
	}
	r.Items = append(r.Items, it)
}

// NeedsAttention reports whether anything needed a repair that could not be made; the CLI
// exits non-zero on it, so a scheduled run can page someone.
func (r *Report) NeedsAttention() bool {
	return slices.ContainsFunc(r.Items, Item.Attention)
}

// Total sums the counts over every kind.
func (r *Report) Total() Count {
	t := Count{Kind: "total"}
	for _, c := range r.Counts {
		t.Found += c.Found
		t.Fine += c.Fine
		t.Enqueued += c.Enqueued
		t.Skipped += c.Skipped
		t.Failed += c.Failed
	}
	return t
}

// WriteJSON writes the report as one JSON document (for scripts).
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// WriteText writes the report for a person: a heading, the counts as a table, then every item
// that was (or would be) repaired, skipped or failed.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	mode := "APPLY"
	enq := "enqueued"
	if r.DryRun {
		mode = "DRY RUN (nothing changed; run again with --apply to do it)"
		enq = "would enqueue"
	}
	fmt.Fprintf(&b, "reconcile: %s\nmode: %s\n\n", r.Scope, mode)
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "kind\tfound\talready fine\t%s\tskipped\tfailed\n", enq)
	for _, c := range append(slices.Clone(r.Counts), r.Total()) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\n", c.Kind, c.Found, c.Fine, c.Enqueued, c.Skipped, c.Failed)
	}
	_ = tw.Flush()
	for _, c := range r.Counts {
		for _, why := range sortedKeys(c.SkippedWhy) {
			fmt.Fprintf(&b, "  %s skipped %d: %s\n", c.Kind, c.SkippedWhy[why], why)
		}
		for _, why := range sortedKeys(c.FailedWhy) {
			fmt.Fprintf(&b, "  %s FAILED %d: %s\n", c.Kind, c.FailedWhy[why], why)
		}
	}
	if len(r.Items) > 0 {
		b.WriteString("\nitems:\n")
		tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "kind\tsubject\ttenant\taction\tresult\treason")
		for _, it := range r.Items {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", it.Kind, it.Subject, orDash(it.TenantID), it.Action, it.Result, orDash(it.Reason))
		}
		_ = tw.Flush()
	}
	if r.NeedsAttention() {
		b.WriteString("\nATTENTION: some items could not be repaired; see the failed reasons above.\n")
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
