package console

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/auth"
)

// The keys and members pages offer forms only to people whose role may use
// them, and only the roles they may grant. That is presentation: the API
// route each form dispatches to decides (a forged post is refused there
// in the API's words), using the same permission table and role ranking
// (pkg/auth) the forms are drawn from.

// principal is the signed-in person (the zero Principal without a session).
func principal(ec echo.Context) auth.Principal {
	if s := current(ec); s != nil {
		return s.principal
	}
	return auth.Principal{}
}

// grantable returns the roles p may give a key (withAgent) or a member,
// most powerful first, as options with selected chosen.
func grantable(p auth.Principal, withAgent bool, selected string) []option {
	var out []option
	for _, r := range auth.Roles {
		if (r == auth.RoleAgent && !withAgent) || !p.Role.Grants(r) {
			continue
		}
		out = append(out, option{Value: string(r), Label: string(r), Selected: string(r) == selected})
	}
	return out
}

// invalid returns the request fields (the error envelope's details'
// paths, first element) an API refusal names.
func (r apiResult) invalid() map[string]bool {
	var env struct {
		Error struct {
			Details []struct{ Path string } `json:"details"`
		} `json:"error"`
	}
	out := map[string]bool{}
	if json.Unmarshal(r.Body, &env) != nil {
		return out
	}
	for _, d := range env.Error.Details {
		name, _, _ := strings.Cut(d.Path, ".")
		name, _, _ = strings.Cut(name, "[")
		out[name] = true
	}
	return out
}

// markInvalid sets Invalid on the inputs the refusal names (by their
// API field name, given by apiName) and, when it names none, on none.
func markInvalid(f *rowForm, bad map[string]bool, apiName func(formName string) string) {
	for i := range f.Inputs {
		n := f.Inputs[i].Name
		if apiName != nil {
			n = apiName(n)
		}
		f.Inputs[i].Invalid = bad[n]
	}
}

// confirmView is a confirmation step before a destructive change.
type confirmView struct {
	NavKey, Heading, Intro string
	Facts                  [][2]string
	Form                   rowForm
	Cancel                 string
}

func (v confirmView) nav() string { return v.NavKey }

// confirmStep renders the confirmation page for the item of the API list
// at listPath whose field equals want (the list is read as the person, so
// another tenant's item is not found), built by build; Cancel returns to
// the page it came from (the section's list unless build names one).
func (c *Console) confirmStep(ec echo.Context, listPath, field, want, what string, build func(map[string]any) confirmView) error {
	items, r := c.list(ec, listPath)
	if !r.OK() {
		return c.apiFail(ec, r)
	}
	for _, it := range items {
		if text(it[field]) == want {
			v := build(it)
			if v.Cancel == "" {
				v.Cancel = Prefix + "/" + v.NavKey
			}
			return c.render(ec, http.StatusOK, "confirm", v.Heading, v)
		}
	}
	return c.fail(ec, http.StatusNotFound, what+" not found")
}

// deleteThen sends DELETE apiPath and returns to the page nav with flash.
func (c *Console) deleteThen(ec echo.Context, apiPath, nav, flash string) error {
	r := c.call(ec, http.MethodDelete, apiPath, nil)
	if !r.OK() {
		return c.apiFail(ec, r)
	}
	return ec.Redirect(http.StatusSeeOther, Prefix+"/"+nav+"?flash="+url.QueryEscape(flash))
}

// splitList reads a comma-separated field (agent ids, groups).
func splitList(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}
