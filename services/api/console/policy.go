package console

import (
	"io"
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"
	"go.yaml.in/yaml/v3"
)

func (c *Console) policiesPage(ec echo.Context) error {
	v := tableView{NavKey: "policies", Heading: "Policies", Intro: "Published policies. Write a new one in the editor: it is compiled on the server as you type."}
	v.Extra = []panel{{Heading: "New policy", Forms: nil}}
	return c.listPage(ec, v, "/v1/policies", url.Values{}, []column{
		{Header: "Id", Path: "id", Link: Prefix + "/policies/%s/edit", Mono: true}, {Header: "Name", Path: "name"}, {Header: "Status", Path: "status"},
		{Header: "Version", Path: "version"}, {Header: "Updated", Path: "updatedAt"}, {Header: "By", Path: "by"},
	}, nil)
}

// docFields are the policy view's fields that make up its document.
var docFields = []string{"id", "name", "description", "enabled", "priority", "inputs", "conditions", "defaultDecision", "rules", "tests"}

// policyView is the editor.
type policyView struct {
	ID, YAML, Problem string
}

func (policyView) nav() string { return "policies" }

const newPolicy = `id: my-policy
name: My policy
rules:
  - id: big-refund
    when: action.tool == "execute_refund" && context.amount > 1000
    outcome: require_approval
    reasonCodes: [AMOUNT_OVER_THRESHOLD]
`

func (c *Console) policyEditor(ec echo.Context) error {
	v := policyView{ID: ec.Param("id"), YAML: newPolicy}
	if v.ID != "" {
		r := c.call(ec, http.MethodGet, "/v1/policies/"+url.PathEscape(v.ID), nil)
		if !r.OK() {
			return c.apiFail(ec, r)
		}
		var view map[string]any
		if err := r.Decode(&view); err != nil {
			return c.fail(ec, http.StatusBadGateway, "the API answered something the console cannot read")
		}
		doc := map[string]any{}
		for _, k := range docFields {
			if x, ok := view[k]; ok && x != nil {
				doc[k] = x
			}
		}
		if y, err := yaml.Marshal(doc); err == nil {
			v.YAML = string(y)
		}
	}
	return c.render(ec, http.StatusOK, "policy", "Policy editor", v)
}

// validatePolicy compiles the editor's text through the API's validate
// route and answers {valid, message}.
func (c *Console) validatePolicy(ec echo.Context) error {
	body, err := io.ReadAll(io.LimitReader(ec.Request().Body, 1<<20))
	if err != nil {
		return c.fail(ec, http.StatusBadRequest, "cannot read the policy")
	}
	r := c.call(ec, http.MethodPost, "/v1/policies/validate", body, "application/yaml")
	if r.Status == http.StatusUnauthorized || r.Status == http.StatusForbidden {
		return ec.JSON(r.Status, map[string]any{"valid": false, "message": r.Problem()})
	}
	if !r.OK() {
		return ec.JSON(http.StatusOK, map[string]any{"valid": false, "message": r.Problem()})
	}
	var ok map[string]any
	_ = r.Decode(&ok)
	ok["message"] = "compiles"
	return ec.JSON(http.StatusOK, ok)
}

// savePolicy creates the policy (POST /v1/policies) or, when the form
// names an existing one, replaces its document (PATCH).
func (c *Console) savePolicy(ec echo.Context) error {
	src := []byte(ec.FormValue("yaml"))
	id := ec.FormValue("id")
	var r apiResult
	if id == "" {
		r = c.call(ec, http.MethodPost, "/v1/policies", src, "application/yaml")
	} else {
		// PATCH takes JSON: the YAML's fields replace the stored ones.
		var doc map[string]any
		if err := yaml.Unmarshal(src, &doc); err != nil || doc == nil {
			return c.render(ec, http.StatusBadRequest, "policy", "Policy editor", policyView{ID: id, YAML: string(src), Problem: "the document is not a YAML mapping"})
		}
		delete(doc, "id")
		r = c.call(ec, http.MethodPatch, "/v1/policies/"+url.PathEscape(id), doc)
	}
	if !r.OK() {
		if r.Status == http.StatusUnauthorized {
			return c.apiFail(ec, r)
		}
		return c.render(ec, r.Status, "policy", "Policy editor", policyView{ID: id, YAML: string(src), Problem: r.Problem()})
	}
	var rec struct {
		ID string `json:"id"`
	}
	_ = r.Decode(&rec)
	return ec.Redirect(http.StatusSeeOther, Prefix+"/policies?flash="+url.QueryEscape("saved "+rec.ID))
}
