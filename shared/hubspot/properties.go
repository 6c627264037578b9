package hubspot

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// Property is a CRM property definition as HubSpot's properties API (CRM v3) reads and writes
// it: type is the data type (string, number, date, ...), fieldType how it shows (text, ...).
type Property struct {
	Name           string `json:"name"`
	Label          string `json:"label"`
	Type           string `json:"type"`
	FieldType      string `json:"fieldType"`
	GroupName      string `json:"groupName"`
	Description    string `json:"description,omitempty"`
	HasUniqueValue bool   `json:"hasUniqueValue,omitempty"`
}

// PropertyGroup is a group properties are shown under in HubSpot.
type PropertyGroup struct {
	Name         string `json:"name"`
	Label        string `json:"label"`
	DisplayOrder int    `json:"displayOrder"`
}

// GetProperty reads one property of objectType (GET /crm/v3/properties/{objectType}/{name});
// found is false when HubSpot answers 404.
func (c *Client) GetProperty(ctx context.Context, objectType, name string) (p Property, found bool, err error) {
	found, err = c.getJSON(ctx, "read property "+objectType+"."+name,
		"/crm/v3/properties/"+url.PathEscape(objectType)+"/"+url.PathEscape(name), &p)
	return p, found, err
}

// CreateProperty creates a property on objectType (POST /crm/v3/properties/{objectType}, 201).
func (c *Client) CreateProperty(ctx context.Context, objectType string, p Property) error {
	return c.create(ctx, "create property "+objectType+"."+p.Name, "/crm/v3/properties/"+url.PathEscape(objectType), p)
}

// GetPropertyGroup reads a property group of objectType (GET
// /crm/v3/properties/{objectType}/groups/{name}); found is false on 404.
func (c *Client) GetPropertyGroup(ctx context.Context, objectType, name string) (g PropertyGroup, found bool, err error) {
	found, err = c.getJSON(ctx, "read property group "+objectType+"."+name,
		"/crm/v3/properties/"+url.PathEscape(objectType)+"/groups/"+url.PathEscape(name), &g)
	return g, found, err
}

// CreatePropertyGroup creates a property group on objectType (POST
// /crm/v3/properties/{objectType}/groups, 201).
func (c *Client) CreatePropertyGroup(ctx context.Context, objectType string, g PropertyGroup) error {
	return c.create(ctx, "create property group "+objectType+"."+g.Name, "/crm/v3/properties/"+url.PathEscape(objectType)+"/groups", g)
}

func (c *Client) getJSON(ctx context.Context, op, path string, out any) (bool, error) {
	if c.token == "" {
		return false, fmt.Errorf("%s: %w", op, ErrNoAccessToken)
	}
	status, header, body, err := c.send(ctx, http.MethodGet, path, nil)
	if err != nil {
		return false, &Error{Op: op, Err: err}
	}
	if status == http.StatusNotFound {
		return false, nil
	}
	if status != http.StatusOK {
		return false, c.responseError(op, status, header, body, parseRateLimit(header))
	}
	if err := json.Unmarshal(body, out); err != nil {
		return false, &Error{Op: op, StatusCode: status, Message: "undecodable answer: " + err.Error()}
	}
	return true, nil
}

func (c *Client) create(ctx context.Context, op, path string, in any) error {
	if c.token == "" {
		return fmt.Errorf("%s: %w", op, ErrNoAccessToken)
	}
	data, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("%s: encode request: %w", op, err)
	}
	status, header, body, err := c.send(ctx, http.MethodPost, path, data)
	if err != nil {
		return &Error{Op: op, Err: err}
	}
	if status != http.StatusCreated && status != http.StatusOK {
		return c.responseError(op, status, header, body, parseRateLimit(header))
	}
	return nil
}
