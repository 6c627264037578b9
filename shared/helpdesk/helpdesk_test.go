package helpdesk_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/helpdesk"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/jobs/jobstest"
	"github.com/portal-functions/portal-functions/shared/storage"
	"github.com/portal-functions/portal-functions/shared/storage/storagefake"
	"github.com/portal-functions/portal-functions/shared/telemetry"
	"github.com/portal-functions/portal-functions/shared/ticket"
	"github.com/portal-functions/portal-functions/shared/ticket/tickettest"
	"github.com/portal-functions/portal-functions/shared/zendesk"
	"github.com/portal-functions/portal-functions/shared/zendesk/zendeskfake"
)

const (
	agentEmail = "agent@example.com"
	agentToken = "zendesk-test-token"
)

type bundle struct {
	env    *tickettest.Env
	member tickettest.Member
	desk   *zendeskfake.TestServer
	pusher *helpdesk.Pusher
}

func setup(t *testing.T, timeout time.Duration) bundle {
	t.Helper()
	env := tickettest.New(t)
	desk := zendeskfake.NewTest(t, agentEmail, agentToken)
	return bundle{env: env, member: env.Seed(t, "Acme", "member"), desk: desk, pusher: newPusher(env, desk, agentToken, timeout)}
}

func newPusher(env *tickettest.Env, desk *zendeskfake.TestServer, token string, timeout time.Duration) *helpdesk.Pusher {
	client := zendesk.New(zendesk.Config{BaseURL: desk.URL(), Email: agentEmail, APIToken: token, Timeout: timeout})
	return helpdesk.NewPusher(env.Pool, client, env.Signer, helpdesk.Options{
		IsMissing: func(err error) bool { return errors.Is(err, storage.ErrNotFound) },
	})
}

type state struct {
	Status     string
	HelpdeskID *int64
}

func ticketState(t *testing.T, b bundle, id uuid.UUID) state {
	t.Helper()
	var s state
	require.NoError(t, b.env.Pool.QueryRow(context.Background(),
		`select status, helpdesk_ticket_id from public.tickets where id = $1`, id).Scan(&s.Status, &s.HelpdeskID))
	return s
}

func TestPushCreatesOneZendeskTicketWithLinksAndMarksSynced(t *testing.T) {
	t.Parallel()
	b := setup(t, 0)
	created := b.env.Create(t, b.member, "Printer on fire",
		ticket.AttachmentRequest{Name: "photo.png", Size: 3, ContentType: "image/png"},
		ticket.AttachmentRequest{Name: "log.txt", Size: 3, ContentType: "text/plain"})
	// The user uploads the photo only.
	req, _ := http.NewRequest(http.MethodPut, created.Attachments[0].UploadURL, strings.NewReader("png"))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()

	require.NoError(t, b.pusher.Push(context.Background(), b.member.TenantID, created.ID, helpdesk.Attempt{}))

	tickets := b.desk.Tickets()
	require.Len(t, tickets, 1)
	zt := tickets[0]
	require.Equal(t, created.ID.String(), zt.ExternalID)
	require.Equal(t, created.ID.String(), zt.IdempotencyKey)
	require.Equal(t, "Printer on fire", zt.Subject)
	require.Equal(t, b.member.Email, zt.RequesterEmail)
	require.Equal(t, "Ada Acme", zt.RequesterName)
	require.Equal(t, "high", zt.Priority)
	require.Contains(t, zt.Tags, "tenant_"+b.member.TenantID.String())
	require.Contains(t, zt.Description, "log.txt (text/plain, 3 bytes): not uploaded")

	link := regexp.MustCompile(`photo\.png \(image/png, 3 bytes\): (\S+)`).FindStringSubmatch(zt.Description)
	require.Len(t, link, 2, zt.Description)
	resp, err = http.Get(link[1])
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, "png", string(body), "the agent's link downloads the file")

	require.Equal(t, state{Status: "synced", HelpdeskID: &zt.ID}, ticketState(t, b, created.ID))

	// The job running again (a redelivery) creates nothing.
	require.NoError(t, b.pusher.Push(context.Background(), b.member.TenantID, created.ID, helpdesk.Attempt{}))
	require.Len(t, b.desk.Tickets(), 1)
}

func TestLostAnswerAdoptsTheZendeskTicketInsteadOfCreatingAgain(t *testing.T) {
	t.Parallel()
	b := setup(t, 300*time.Millisecond)
	created := b.env.Create(t, b.member, "Timeout")
	b.desk.TimeoutNextCreates(1)

	require.NoError(t, b.pusher.Push(context.Background(), b.member.TenantID, created.ID, helpdesk.Attempt{}))
	require.Len(t, b.desk.Tickets(), 1)
	s := ticketState(t, b, created.ID)
	require.Equal(t, "synced", s.Status)
	require.Equal(t, b.desk.Tickets()[0].ID, *s.HelpdeskID)
}

// An attempt that created the Zendesk ticket and died before recording it (its answer lost)
// is followed by one that adopts that ticket, even after Zendesk forgot the Idempotency-Key:
// the later attempt knows to look first from the ticket's attempt stamp, or, when a crash of
// the database lost the stamp (its commit does not wait for the WAL flush), from River's
// record that the job was fetched before.
func TestRetryAfterACrashLooksUpBeforeCreating(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name        string
		stamped     bool
		attemptedBy []string
		advance     time.Duration
	}{
		{name: "stamped, inside the idempotency window", stamped: true, attemptedBy: []string{"c1"}},
		{name: "stamped, after Zendesk forgot the key", stamped: true, attemptedBy: []string{"c1"}, advance: 3 * time.Hour},
		{name: "stamp lost, the job's second fetch", attemptedBy: []string{"c1", "c2"}, advance: 3 * time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, 0)
			created := b.env.Create(t, b.member, "Crash")
			// An earlier attempt created the Zendesk ticket (with a body whose signed links
			// differ) and died before recording it.
			if tc.stamped {
				_, err := b.env.Pool.Exec(context.Background(), `update public.tickets set helpdesk_attempted_at = now() where id = $1`, created.ID)
				require.NoError(t, err)
			}
			client := zendesk.New(zendesk.Config{BaseURL: b.desk.URL(), Email: agentEmail, APIToken: agentToken})
			first, err := client.CreateTicket(context.Background(), zendesk.NewTicket{Subject: "Crash", Body: "earlier body",
				ExternalID: created.ID.String()}, created.ID.String())
			require.NoError(t, err)
			b.desk.Advance(tc.advance)

			job := &river.Job[jobs.HelpdeskTicketArgs]{
				JobRow: &rivertype.JobRow{Attempt: len(tc.attemptedBy), MaxAttempts: jobs.MaxAttempts, AttemptedBy: tc.attemptedBy},
				Args:   jobs.HelpdeskTicketArgs{TenantID: b.member.TenantID, TicketID: created.ID},
			}
			require.NoError(t, helpdesk.NewWorker(b.pusher).Work(context.Background(), job))
			require.Len(t, b.desk.Tickets(), 1)
			require.Equal(t, first.ID, *ticketState(t, b, created.ID).HelpdeskID)
		})
	}
}

func TestFailuresTellTheQueueWhatToDo(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		arrange    func(t *testing.T, b bundle, id uuid.UUID) *helpdesk.Pusher
		last       bool
		retryAfter time.Duration
		permanent  bool
		message    string
		status     string
	}{
		{
			name: "rate limited waits for Retry-After",
			arrange: func(t *testing.T, b bundle, _ uuid.UUID) *helpdesk.Pusher {
				b.desk.SetMode(zendeskfake.ModeRateLimited)
				b.desk.SetRetryAfter(7 * time.Second)
				return b.pusher
			},
			retryAfter: 7 * time.Second, status: "pending_sync",
		},
		{
			name: "outage retries with backoff",
			arrange: func(t *testing.T, b bundle, _ uuid.UUID) *helpdesk.Pusher {
				b.desk.SetMode(zendeskfake.ModeDown)
				return b.pusher
			},
			status: "pending_sync",
		},
		{
			name: "outage on the last attempt marks the ticket failed",
			arrange: func(t *testing.T, b bundle, _ uuid.UUID) *helpdesk.Pusher {
				b.desk.SetMode(zendeskfake.ModeDown)
				return b.pusher
			},
			last: true, status: "failed",
		},
		{
			name: "record invalid is permanent with Zendesk's message",
			arrange: func(t *testing.T, b bundle, id uuid.UUID) *helpdesk.Pusher {
				_, err := b.env.Pool.Exec(context.Background(), `update public.tickets set requester_email = 'not-an-email' where id = $1`, id)
				require.NoError(t, err)
				return b.pusher
			},
			permanent: true, message: "Requester: Email is invalid", status: "failed",
		},
		{
			name: "wrong API token is permanent",
			arrange: func(t *testing.T, b bundle, _ uuid.UUID) *helpdesk.Pusher {
				return newPusher(b.env, b.desk, "wrong-token", 0)
			},
			permanent: true, message: "401", status: "failed",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, 0)
			created := b.env.Create(t, b.member, "Help")
			p := tc.arrange(t, b, created.ID)

			err := p.Push(context.Background(), b.member.TenantID, created.ID, helpdesk.Attempt{Last: tc.last})
			require.Error(t, err)
			var perm *jobs.PermanentError
			require.Equal(t, tc.permanent, errors.As(err, &perm), err.Error())
			var ra *jobs.RetryAfterError
			if tc.retryAfter > 0 {
				require.ErrorAs(t, err, &ra)
				require.Equal(t, tc.retryAfter, ra.Wait)
			} else {
				require.False(t, errors.As(err, &ra))
			}
			require.Contains(t, err.Error(), tc.message)
			require.Equal(t, tc.status, ticketState(t, b, created.ID).Status)
			require.Empty(t, b.desk.Tickets())
		})
	}
}

func TestUnknownTicketIsPermanent(t *testing.T) {
	t.Parallel()
	b := setup(t, 0)
	err := b.pusher.Push(context.Background(), b.member.TenantID, uuid.New(), helpdesk.Attempt{})
	require.ErrorIs(t, err, helpdesk.ErrTicketGone)
	var perm *jobs.PermanentError
	require.ErrorAs(t, err, &perm)
}

func TestPushFunctionWorksTheHelpdeskQueue(t *testing.T) {
	t.Parallel()
	b := setup(t, 0)
	created := b.env.Create(t, b.member, "Scheduled push")
	vars := map[string]string{
		"ZENDESK_BASE_URL": b.desk.URL(), "ZENDESK_EMAIL": agentEmail, "ZENDESK_API_TOKEN": agentToken,
		"SUPABASE_URL": b.env.Storage.URL(), "SUPABASE_SERVICE_ROLE_KEY": storagefake.DefaultServiceKey,
	}
	deps := function.Deps{
		Name: "support-push", Pool: b.env.Pool, Logger: slog.New(slog.DiscardHandler),
		Metrics: telemetry.NewMetrics(io.Discard, "support-push"), HTTPClient: &http.Client{Timeout: 5 * time.Second},
		Lookup: func(k string) (string, bool) { v, ok := vars[k]; return v, ok },
	}
	var cfg helpdesk.Config
	require.NoError(t, config.LoadFrom(deps.Lookup, &cfg))
	run, err := helpdesk.PushFunction.Build(context.Background(), deps, cfg)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sum, err := run(ctx, events.EventBridgeEvent{})
	require.NoError(t, err)
	require.Equal(t, 1, sum.Succeeded, "%+v", sum)
	_, ok := b.desk.Ticket(created.ID.String())
	require.True(t, ok)
	require.Equal(t, "synced", ticketState(t, b, created.ID).Status)
	var syncState string
	require.NoError(t, b.env.Pool.QueryRow(context.Background(),
		`select state from private.sync_status where integration = 'helpdesk' and subject = $1`, "ticket:"+created.ID.String()).Scan(&syncState))
	require.Equal(t, "synced", syncState)
}

func TestPushFunctionNamesMissingZendeskSettings(t *testing.T) {
	t.Parallel()
	_, _, err := function.Load[helpdesk.Config](func(string) (string, bool) { return "", false })
	require.ErrorContains(t, err, "ZENDESK_BASE_URL")
	require.ErrorContains(t, err, "ZENDESK_API_TOKEN")
}

// The real worker on the real queue, with Zendesk misbehaving the documented ways: down (503),
// then rate limited (429 + Retry-After), then creating the ticket but never answering. The job
// retries with backoff, waits as long as Zendesk asked, adopts the ticket it cannot see the
// answer for, and ends with exactly one Zendesk ticket. A ticket Zendesk refuses (422
// RecordInvalid) is dead-lettered with Zendesk's message and never tried again.
func TestQueueRidesOutZendeskFailuresAndDeadLettersARefusal(t *testing.T) {
	t.Parallel()
	b := setup(t, time.Second) // the client gives up on the withheld create after 1 s
	ctx := context.Background()
	good := b.env.Create(t, b.member, "Rides out the storm")
	bad := b.env.Create(t, b.member, "Refused by Zendesk")
	_, err := b.env.Pool.Exec(ctx, `update public.tickets set requester_email = 'not-an-email' where id = $1`, bad.ID)
	require.NoError(t, err)

	workers := river.NewWorkers()
	river.AddWorker(workers, helpdesk.NewWorker(b.pusher))
	clock := jobstest.NewClock()
	cfg := jobs.RunConfig{Queue: jobs.QueueHelpdesk, Workers: workers, Budget: 10 * time.Second, Time: clock}
	run := func() jobs.Summary {
		t.Helper()
		sum, err := jobs.Run(ctx, b.env.Pool, cfg)
		require.NoError(t, err)
		return sum
	}
	jobOf := func(id uuid.UUID) (jobState string, scheduledAt time.Time, lastError string) {
		t.Helper()
		require.NoError(t, b.env.Pool.QueryRow(ctx, `
			select state::text, scheduled_at, coalesce(errors[array_length(errors, 1)]->>'error', '')
			from private.river_job where kind = 'helpdesk_ticket' and args->>'ticket_id' = $1`, id.String()).
			Scan(&jobState, &scheduledAt, &lastError))
		return jobState, scheduledAt, lastError
	}

	b.desk.SetMode(zendeskfake.ModeDown)
	require.Equal(t, jobs.Summary{Worked: 2, Failed: 2}, run(), "an outage is retried")
	js, _, lastErr := jobOf(good.ID)
	require.Equal(t, "retryable", js)
	require.Contains(t, lastErr, "HTTP 503")

	b.desk.SetMode(zendeskfake.ModeRateLimited)
	b.desk.SetRetryAfter(90 * time.Second)
	clock.Advance(20 * time.Second) // past the first backoff (15 s + 20% jitter)
	require.Equal(t, jobs.Summary{Worked: 2, Snoozed: 2}, run())
	js, scheduledAt, _ := jobOf(good.ID)
	require.Equal(t, "scheduled", js)
	require.WithinDuration(t, clock.Now().Add(90*time.Second), scheduledAt, 5*time.Second, "Retry-After is honoured")
	clock.Advance(60 * time.Second)
	require.Zero(t, run().Worked, "nothing runs before Zendesk's Retry-After is over")

	b.desk.SetMode(zendeskfake.ModeUp)
	b.desk.TimeoutNextCreates(1)
	clock.Advance(40 * time.Second)
	require.Equal(t, jobs.Summary{Worked: 2, Succeeded: 1, Discarded: 1}, run())

	require.Len(t, b.desk.Tickets(), 1, "one Zendesk ticket, though its answer was lost")
	zt := b.desk.Tickets()[0]
	require.Equal(t, good.ID.String(), zt.ExternalID)
	require.Equal(t, state{Status: "synced", HelpdeskID: &zt.ID}, ticketState(t, b, good.ID))

	require.Equal(t, "failed", ticketState(t, b, bad.ID).Status)
	letters, err := jobs.DeadLetters(ctx, b.env.Pool, jobs.QueueHelpdesk, &b.member.TenantID)
	require.NoError(t, err)
	require.Len(t, letters, 1)
	require.Equal(t, jobs.TicketSubject(bad.ID), letters[0].Subject)
	require.Contains(t, letters[0].LastError, "Requester: Email is invalid", "the dead letter keeps Zendesk's message")

	clock.Advance(2 * time.Hour)
	require.Zero(t, run().Worked, "a refused ticket is not retried")
}
