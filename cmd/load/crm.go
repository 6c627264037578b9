package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/portal-functions/portal-functions/shared/sam"
)

// crmSettle bounds how long the CRM scenario waits, after the last webhook, for the pushes.
const crmSettle = 2 * time.Minute

// crmTenant is one tenant of the CRM scenario: its own Stripe customer, so each webhook maps to
// exactly one CRM company push (portal_tenant_id = the tenant id).
type crmTenant struct {
	id       uuid.UUID
	customer string
	email    string
}

// runCRM measures the delay a customer notices between Stripe's delivery being committed (the
// webhook's 200) and the CRM showing it (the HubSpot stand-in receiving the company upsert),
// with webhooks arriving at a fixed rate, each for a tenant of its own. It seeds those tenants
// in make dev's database, sends a payment failure for each, then reads the stand-in's received
// upserts from make dev's control API, and returns the p95 delay.
func runCRM(ctx context.Context, o options) (p95 time.Duration, err error) {
	p, err := sam.Open(".")
	if err != nil {
		return 0, err
	}
	env := p.Env["PaymentWebhookFunction"]
	event, err := sampleEvent(filepath.Join(p.Root, "events", "payment-webhook-payment-failed.json"))
	if err != nil {
		return 0, err
	}
	total := min(int(o.rate*o.duration.Seconds()), o.max)
	run := time.Now().Format("150405")
	tenants := make([]crmTenant, total)
	for i := range tenants {
		tenants[i] = crmTenant{id: uuid.New(), customer: fmt.Sprintf("cus_load_%s_%d", run, i), email: fmt.Sprintf("load-%s-%d@load.test", run, i)}
	}
	dbURL := os.Getenv("DATABASE_URL")
	if dbURL == "" {
		dbURL = env["DATABASE_URL"]
	}
	if err := seedTenants(ctx, dbURL, tenants); err != nil {
		return 0, err
	}
	client := &http.Client{Timeout: 10 * time.Second}
	if _, err := receivedUpserts(ctx, client, o); err != nil {
		return 0, err
	}

	fmt.Printf("load: CRM delay, %d payment failures at %.0f/s against %s, each for a new tenant\n", total, o.rate, o.target)
	committed := make([]time.Time, total)
	var failed []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / o.rate)
	start := time.Now()
	for i, tn := range tenants {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(d):
			}
		}
		var ev map[string]any
		if err := json.Unmarshal(event, &ev); err != nil {
			return 0, fmt.Errorf("parse the payment failure sample's Stripe event: %w", err)
		}
		ev["id"] = fmt.Sprintf("evt_crm_load_%s_%d", run, i)
		ev["created"] = time.Now().Unix()
		obj := ev["data"].(map[string]any)["object"].(map[string]any)
		obj["id"], obj["customer"], obj["customer_email"] = fmt.Sprintf("in_crm_load_%s_%d", run, i), tn.customer, tn.email
		body, err := json.Marshal(ev)
		if err != nil {
			return 0, fmt.Errorf("encode event: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, err := postWebhook(ctx, client, o, body, env["STRIPE_WEBHOOK_SECRET"])
			mu.Lock()
			defer mu.Unlock()
			if err != nil || status != http.StatusOK {
				failed = append(failed, fmt.Sprintf("status %d %v", status, err))
				return
			}
			committed[i] = time.Now()
		}()
	}
	wg.Wait()

	// Wait until every committed tenant's company reached the stand-in, or crmSettle passes.
	delays := make([]time.Duration, 0, total)
	deadline := time.Now().Add(crmSettle)
	for {
		got, err := receivedUpserts(ctx, client, o)
		if err != nil {
			return 0, err
		}
		delays = delays[:0]
		for i, tn := range tenants {
			if at, ok := got[tn.id.String()]; ok && !committed[i].IsZero() {
				delays = append(delays, at.Sub(committed[i]))
			}
		}
		if len(delays)+len(failed) >= total || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	fmt.Printf("\nwebhooks committed %d, failed %d; CRM upserts received %d, missing after %s: %d\n",
		total-len(failed), len(failed), len(delays), crmSettle, total-len(failed)-len(delays))
	if len(delays) > 0 {
		fmt.Printf("commit -> CRM upsert   p50 %s   p95 %s   p99 %s   max %s\n",
			pct(delays, 50), pct(delays, 95), pct(delays, 99), delays[len(delays)-1].Round(time.Millisecond))
	}
	for _, f := range failed {
		fmt.Println("failed webhook:", f)
	}
	if len(delays) == 0 {
		return 0, nil
	}
	return pct(delays, 95), nil
}

// runBothCRMShapes times the CRM delay in make dev's shape (continuous in-process workers),
// then, unless deployed is false, in the deployed shape, and ends with the p95 of each.
func runBothCRMShapes(ctx context.Context, o options, deployed bool) error {
	dev, err := runCRM(ctx, o)
	if err != nil {
		return err
	}
	summary := fmt.Sprintf("\np95 commit -> CRM upsert: make dev's continuous workers %s", dev)
	if deployed {
		d, err := runDeployedCRM(ctx)
		if err != nil {
			return err
		}
		summary += "; deployed shape (webhook + nudged crm-push) " + d
	}
	fmt.Println(summary)
	return nil
}

// seedTenants creates the scenario's tenants, each with its own Stripe customer mapping.
func seedTenants(ctx context.Context, dbURL string, tenants []crmTenant) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect to make dev's database (DATABASE_URL): %w", err)
	}
	defer conn.Close(ctx)
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, tn := range tenants {
			if _, err := tx.Exec(ctx, `insert into public.tenants (id, name, contact_email) values ($1, $2, $3)`,
				tn.id, "Load "+tn.customer, tn.email); err != nil {
				return fmt.Errorf("seed load tenant: %w", err)
			}
			if _, err := tx.Exec(ctx, `insert into private.stripe_customers (customer_id, tenant_id) values ($1, $2)`,
				tn.customer, tn.id); err != nil {
				return fmt.Errorf("seed load customer: %w", err)
			}
		}
		return nil
	})
}

// receivedUpserts is when the HubSpot stand-in first received each company (by tenant id).
func receivedUpserts(ctx context.Context, client *http.Client, o options) (map[string]time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.target.JoinPath("/_dev/providers/hubspot/upserts").String(), nil)
	if err != nil {
		return nil, fmt.Errorf("build upserts request: %w", err)
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read the HubSpot stand-in's upserts (is make dev running?): %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return nil, fmt.Errorf("read the HubSpot stand-in's upserts: %s: %s", res.Status, bytes.TrimSpace(msg))
	}
	var upserts []struct {
		At         time.Time `json:"at"`
		ObjectType string    `json:"object_type"`
		ID         string    `json:"id"`
	}
	if err := json.NewDecoder(res.Body).Decode(&upserts); err != nil {
		return nil, fmt.Errorf("decode the HubSpot stand-in's upserts: %w", err)
	}
	first := map[string]time.Time{}
	for _, u := range upserts {
		if _, seen := first[u.ID]; u.ObjectType == "companies" && !seen {
			first[u.ID] = u.At
		}
	}
	return first, nil
}

// postWebhook delivers one signed Stripe event as Stripe would.
func postWebhook(ctx context.Context, client *http.Client, o options, body []byte, secret string) (int, error) {
	r, err := webhookRequest(ctx, o, body, secret)
	if err != nil {
		return 0, err
	}
	res, err := client.Do(r)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	return res.StatusCode, nil
}

// runDeployedCRM measures the same delay in the shape Lambda runs: make dev works the queues
// continuously in process, while in AWS crm-push runs when the webhook's nudge (an
// asynchronous Lambda invoke) starts it. It runs functions' BenchmarkCRMNudge (both built
// bootstraps under the Lambda RIE, the nudge through aws-sdk-go-v2 to a local stand-in of
// Lambda's Invoke API answering in 20 ms, three webhook and two crm-push instances, HubSpot
// answering in 50 ms, payments at 50/s), prints its figures and returns its p95 delay.
func runDeployedCRM(ctx context.Context) (string, error) {
	fmt.Println("\nload: CRM delay in the deployed shape (payment-webhook -> nudge -> crm-push, under the Lambda RIE)")
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-run", "^$", "-bench", "^BenchmarkCRMNudge$", "-benchtime", "1x", "./functions/")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("deployed-shape benchmark: %w\n%s", err, out)
	}
	p95 := "?"
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "commit -> HubSpot") || strings.HasPrefix(line, "BenchmarkCRMNudge") {
			fmt.Println(strings.TrimSpace(line))
		}
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "BenchmarkCRMNudge") {
			for i := 1; i < len(f); i++ {
				if f[i] == "delay_p95_ms" {
					p95 = f[i-1] + "ms"
				}
			}
		}
	}
	return p95, nil
}
