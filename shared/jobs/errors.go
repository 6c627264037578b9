package jobs

import "errors"

// Errors of this package, declared together.
var (
	// ErrUnexpectedRiverSQL means River's migrations changed shape in a way the generator does
	// not know; read the new versions and update RiverMigrationSQL.
	ErrUnexpectedRiverSQL = errors.New("jobs: river migration SQL has an unexpected shape")
	// ErrNoTenant means a job was enqueued without a tenant id.
	ErrNoTenant = errors.New("jobs: tenant id is required")
	// ErrNoSourceEvent means a CRM sync was enqueued without naming what caused it, which
	// would make every push of the tenant the same unique job.
	ErrNoSourceEvent = errors.New("jobs: source event is required")
	// ErrNoSubscription means a billing refresh was enqueued without a subscription id.
	ErrNoSubscription = errors.New("jobs: subscription id is required")
	// ErrNoTicket means a helpdesk job was enqueued without a ticket id.
	ErrNoTicket = errors.New("jobs: ticket id is required")
	// ErrRunConfig means Run was called without a queue or workers.
	ErrRunConfig = errors.New("jobs: run needs a queue and workers")
	// ErrRequeueUnscoped means Requeue was asked for neither a job nor an integration:
	// requeueing every dead letter of every integration at once is refused.
	ErrRequeueUnscoped = errors.New("jobs: requeue needs a job id or an integration")
	// ErrNotDeadLetter means Requeue was given the id of a job that is not dead-lettered (it
	// does not exist, completed, or will still run by itself).
	ErrNotDeadLetter = errors.New("jobs: not a dead-lettered job")
)
