package hubspot

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
)

// Association is one contact-to-company pair, by HubSpot record ids (RecordResult.ObjectID of
// the upserts).
type Association struct {
	ContactID string
	CompanyID string
}

// Default association of a contact with a company, as HubSpot reports it: the unlabeled
// contact-to-company type.
const (
	AssociationCategoryHubSpot     = "HUBSPOT_DEFINED"
	ContactToCompanyAssociationID  = 279
	defaultAssociationPathContacts = "/crm/v4/associations/contacts/companies/batch/associate/default"
)

type objectRef struct {
	ID string `json:"id"`
}

type associationInput struct {
	From objectRef `json:"from"`
	To   objectRef `json:"to"`
}

type associationResponse struct {
	Status  string `json:"status"`
	Results []struct {
		From objectRef `json:"from"`
		To   objectRef `json:"to"`
	} `json:"results"`
	Errors []batchError `json:"errors"`
}

// AssociateContactsWithCompanies gives each contact HubSpot's default (unlabeled) association
// with its company, up to MaxBatchSize pairs in one call (POST
// /crm/v4/associations/contacts/companies/batch/associate/default). Associating a pair that is
// already associated changes nothing, so a retry is safe. The error is non-nil only when the
// whole request failed; the result has one error per input (nil: associated), for the pairs a
// 207 multi-status answer refused.
func (c *Client) AssociateContactsWithCompanies(ctx context.Context, pairs []Association) ([]error, error) {
	const op = "associate contacts with companies"
	if len(pairs) == 0 {
		return nil, nil
	}
	if len(pairs) > MaxBatchSize {
		return nil, fmt.Errorf("%s: %d inputs, at most %d: %w", op, len(pairs), MaxBatchSize, ErrBatchTooLarge)
	}
	if c.token == "" {
		return nil, fmt.Errorf("%s: %w", op, ErrNoAccessToken)
	}
	req := struct {
		Inputs []associationInput `json:"inputs"`
	}{Inputs: make([]associationInput, len(pairs))}
	for i, p := range pairs {
		if p.ContactID == "" || p.CompanyID == "" {
			return nil, fmt.Errorf("%s: input %d: %w", op, i, ErrEmptyID)
		}
		req.Inputs[i] = associationInput{From: objectRef{p.ContactID}, To: objectRef{p.CompanyID}}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("%s: encode request: %w", op, err)
	}
	status, header, respBody, err := c.post(ctx, defaultAssociationPathContacts, body)
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	rl := parseRateLimit(header)
	if status < 200 || status > 299 {
		return nil, c.responseError(op, status, header, respBody, rl)
	}
	var resp associationResponse
	if err := json.Unmarshal(respBody, &resp); err != nil {
		return nil, &Error{Op: op, StatusCode: status, Message: "undecodable batch response: " + err.Error(),
			CorrelationID: header.Get("X-HubSpot-Correlation-Id"), RateLimit: rl, unknownOutcome: true}
	}
	// A refused pair is named in its error's context by the contact id (fromObjectId) or the
	// company id (toObjectId); a pair neither answered nor refused is reported as missing.
	errs := make([]error, len(pairs))
	done := map[Association]bool{}
	for _, r := range resp.Results {
		done[Association{ContactID: r.From.ID, CompanyID: r.To.ID}] = true
	}
	for i, p := range pairs {
		if done[p] {
			continue
		}
		errs[i] = &Error{Op: op, StatusCode: status, Message: "no result for this pair", unknownOutcome: true}
		for _, e := range resp.Errors {
			if slices.Contains(e.contextValues("fromObjectId"), p.ContactID) || slices.Contains(e.contextValues("toObjectId"), p.CompanyID) {
				errs[i] = c.recordError(op, status, p.ContactID, e)
				break
			}
		}
	}
	return errs, nil
}
