package hubspotfake

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// Associations v4, as the fake answers them.
const (
	// AssociationPath is the batch endpoint that gives contacts HubSpot's default association
	// with companies.
	AssociationPath = "/crm/v4/associations/contacts/companies/batch/associate/default"
	// MaxAssociationInputs is the most pairs one batch association request takes.
	MaxAssociationInputs = 2000
	// ContactToCompanyTypeID is HubSpot's id of the default (unlabeled) contact-to-company
	// association type, category HUBSPOT_DEFINED.
	ContactToCompanyTypeID = 279
)

// ObjectID is a record reference of the associations API.
type ObjectID struct {
	ID string `json:"id"`
}

// AssociationSpec is the type of an association HubSpot made.
type AssociationSpec struct {
	AssociationCategory string `json:"associationCategory"`
	AssociationTypeID   int    `json:"associationTypeId"`
}

// AssociationResult is one pair of the batch answer.
type AssociationResult struct {
	From            ObjectID        `json:"from"`
	To              ObjectID        `json:"to"`
	AssociationSpec AssociationSpec `json:"associationSpec"`
}

// AssociationResponse is HubSpot's answer to a batch default association (200, or 207 with
// errors for the pairs it refused).
type AssociationResponse struct {
	Status      string              `json:"status"`
	Results     []AssociationResult `json:"results"`
	NumErrors   int                 `json:"numErrors,omitempty"`
	Errors      []BatchError        `json:"errors,omitempty"`
	StartedAt   string              `json:"startedAt"`
	CompletedAt string              `json:"completedAt"`
	Links       map[string]any      `json:"links"`
}

// Association is a contact associated with a company, as the fake stores it.
type Association struct {
	ContactEmail    string `json:"contact_email"`
	CompanyTenantID string `json:"company_tenant_id"`
	ContactID       string `json:"contact_id"`
	CompanyID       string `json:"company_id"`
}

// Associations lists every contact-to-company association, by contact email then tenant id.
func (s *Server) Associations() []Association {
	s.mu.Lock()
	defer s.mu.Unlock()
	byID := map[string]*object{}
	for _, st := range s.stores {
		for _, o := range st.byKey {
			byID[o.id] = o
		}
	}
	var out []Association
	for contactID, companies := range s.associations {
		for companyID := range companies {
			out = append(out, Association{
				ContactEmail: byID[contactID].key, CompanyTenantID: byID[companyID].key,
				ContactID: contactID, CompanyID: companyID,
			})
		}
	}
	slices.SortFunc(out, func(a, b Association) int {
		return strings.Compare(a.ContactEmail+" "+a.CompanyTenantID, b.ContactEmail+" "+b.CompanyTenantID)
	})
	return out
}

// CompaniesOf returns the portal_tenant_id of every company the contact with this email is
// associated with, sorted.
func (s *Server) CompaniesOf(email string) []string {
	var out []string
	for _, a := range s.Associations() {
		if strings.EqualFold(a.ContactEmail, strings.TrimSpace(email)) {
			out = append(out, a.CompanyTenantID)
		}
	}
	return out
}

// serveAssociate answers POST /crm/v4/associations/contacts/companies/batch/associate/default:
// every pair whose contact and company exist is associated (again, harmlessly, when it already
// is); a pair naming a record that does not exist is refused alone, in a 207 answer.
func (s *Server) serveAssociate(w http.ResponseWriter, body []byte) {
	startedAt := s.clock()
	var req struct {
		Inputs []struct {
			From ObjectID `json:"from"`
			To   ObjectID `json:"to"`
		} `json:"inputs"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() {
		if err == nil {
			err = errors.New("more than one JSON value")
		}
		s.writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON on line 1: "+err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case len(req.Inputs) == 0:
		s.writeErrorLocked(w, http.StatusBadRequest, "VALIDATION_ERROR", "inputs must contain at least one input", nil)
		return
	case len(req.Inputs) > MaxAssociationInputs:
		s.writeErrorLocked(w, http.StatusBadRequest, "VALIDATION_ERROR",
			fmt.Sprintf("Batch input size %d exceeds the limit of %d inputs", len(req.Inputs), MaxAssociationInputs), nil)
		return
	}
	exists := func(store, id string) bool {
		for _, o := range s.stores[store].byKey {
			if o.id == id {
				return true
			}
		}
		return false
	}
	resp := AssociationResponse{Status: "COMPLETE", Results: []AssociationResult{}, StartedAt: stamp(startedAt), Links: map[string]any{}}
	for _, in := range req.Inputs {
		var missing, key string
		switch {
		case !exists("contacts", in.From.ID):
			missing, key = "contact "+in.From.ID, "fromObjectId"
		case !exists("companies", in.To.ID):
			missing, key = "company "+in.To.ID, "toObjectId"
		}
		if missing != "" {
			id := in.From.ID
			if key == "toObjectId" {
				id = in.To.ID
			}
			resp.Errors = append(resp.Errors, BatchError{
				Status: "error", Category: "VALIDATION_ERROR", Message: "No " + missing + " exists",
				Context: map[string][]string{key: {id}},
			})
			continue
		}
		if s.associations[in.From.ID] == nil {
			s.associations[in.From.ID] = map[string]bool{}
		}
		s.associations[in.From.ID][in.To.ID] = true
		resp.Results = append(resp.Results, AssociationResult{
			From: in.From, To: in.To,
			AssociationSpec: AssociationSpec{AssociationCategory: "HUBSPOT_DEFINED", AssociationTypeID: ContactToCompanyTypeID},
		})
	}
	resp.NumErrors = len(resp.Errors)
	resp.CompletedAt = stamp(s.clockLocked())
	status := http.StatusOK
	if resp.NumErrors > 0 {
		status = http.StatusMultiStatus
	}
	s.writeJSONLocked(w, status, resp)
}
