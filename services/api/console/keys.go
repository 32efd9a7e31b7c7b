package console

import (
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/auth"
)

// expiries are the key lifetimes the create form offers (the API's
// expiresIn; empty: the key does not expire).
var expiries = [][2]string{{"", "never"}, {"24h", "1 day"}, {"168h", "7 days"}, {"720h", "30 days"}, {"2160h", "90 days"}, {"8760h", "1 year"}}

// keyForm is the create-a-key form, filled with what was submitted.
func keyForm(p auth.Principal, name, role, agents, expiresIn string) rowForm {
	if role == "" {
		role = string(auth.RoleMember)
		if !p.Role.Grants(auth.RoleMember) {
			role = string(auth.RoleViewer)
		}
	}
	exp := make([]option, len(expiries))
	for i, e := range expiries {
		exp[i] = option{Value: e[0], Label: e[1], Selected: e[0] == expiresIn}
	}
	return rowForm{ID: "create-key", Action: Prefix + "/keys", Label: "Create key", Stacked: true, Inputs: []formInput{
		{ID: "key-name", Name: "name", Label: "Name", Required: true, Value: name, Hint: "What or who uses it, e.g. \"ci deploys\"."},
		{ID: "key-role", Name: "role", Label: "Role", Options: grantable(p, true, role)},
		{ID: "key-agents", Name: "agents", Label: "Bound agent (agent keys)", Value: agents, List: "agent-ids", Hint: "The agent id an agent key acts as; several separated by commas."},
		{ID: "key-expiry", Name: "expiresIn", Label: "Expires after", Options: exp},
	}}
}

// keysPage lists the tenant's keys; whoever may manage keys also gets the
// create form and a revoke step on the keys whose role they may grant.
func (c *Console) keysPage(ec echo.Context) error {
	return c.keysView(ec, nil, "", http.StatusOK)
}

func (c *Console) keysView(ec echo.Context, form *rowForm, problem string, status int) error {
	p := principal(ec)
	v := tableView{NavKey: "keys", Heading: "API keys", Status: status, Stack: true, Problem: problem,
		Intro: "A key's secret is shown once, when it is created; Vigil stores only its hash. Revoking a key ends every console session signed in with it."}
	if form != nil && !p.Allows(auth.KeysManage) {
		v.Problem = form.Problem // a forged post's refusal, in the API's words
	}
	if p.Allows(auth.KeysManage) {
		if form == nil {
			f := keyForm(p, "", "", "", "")
			form = &f
		}
		v.Extra = []panel{{Heading: "Create a key", Forms: []rowForm{*form}}}
		if agents, r := c.list(ec, "/v1/agents/profiles"); r.OK() {
			ids := make([]string, 0, len(agents))
			for _, a := range agents {
				if id := text(a["agentId"]); id != "" {
					ids = append(ids, id)
				}
			}
			v.Datalists = map[string][]string{"agent-ids": ids}
		}
	}
	return c.listPage(ec, v, "/v1/keys", url.Values{}, []column{
		{Header: "Id", Path: "id", Mono: true}, {Header: "Name", Path: "name"}, {Header: "Role", Path: "role"}, {Header: "Agents", Path: "agents"},
		{Header: "Prefix", Path: "prefix", Mono: true}, {Header: "Status", Path: "status"}, {Header: "Created", Path: "createdAt", Time: true},
		{Header: "Last used", Path: "lastUsedAt", Time: true}, {Header: "Expires", Path: "expiresAt", Time: true},
	}, func(it map[string]any) []rowForm {
		if it["status"] != "active" || !p.Role.Grants(auth.Role(text(it["role"]))) {
			return nil
		}
		id := text(it["id"])
		forms := []rowForm{{Action: Prefix + "/keys/" + url.PathEscape(id) + "/revoke", Label: "Revoke…", Get: true, ID: "revoke-" + id}}
		if it["role"] == string(auth.RoleAgent) && it["agents"] == nil {
			// An agent key from before keys were bound: bind it (docs/security.md).
			forms = append([]rowForm{{Action: Prefix + "/keys/" + url.PathEscape(id) + "/bind", Label: "Bind", ID: "bind-" + id,
				Inputs: []formInput{{ID: "bind-agents-" + id, Name: "agents", Label: "Agents key " + id + " acts as", List: "agent-ids", Required: true}}}}, forms...)
		}
		return forms
	})
}

// createKey creates a key through POST /v1/keys and shows its secret on
// the answer page, once: it is in no URL, no redirect, no log and no
// cache (pages are no-store), and the console does not keep it.
func (c *Console) createKey(ec echo.Context) error {
	name, role, agents, expiresIn := ec.FormValue("name"), ec.FormValue("role"), ec.FormValue("agents"), ec.FormValue("expiresIn")
	body := map[string]any{"name": name, "role": role}
	if ids := splitList(agents); len(ids) > 0 {
		body["agentIds"] = ids
	}
	if expiresIn != "" {
		body["expiresIn"] = expiresIn
	}
	r := c.call(ec, http.MethodPost, "/v1/keys", body)
	if r.Status == http.StatusUnauthorized {
		return c.apiFail(ec, r)
	}
	if !r.OK() {
		f := keyForm(principal(ec), name, role, agents, expiresIn)
		f.Problem = r.Problem()
		bad := r.invalid()
		markInvalid(&f, bad, func(n string) string {
			switch n {
			case "agents":
				if bad["agentId"] {
					return "agentId"
				}
				return "agentIds"
			case "expiresIn":
				if bad["expiresAt"] {
					return "expiresAt"
				}
			}
			return n
		})
		return c.keysView(ec, &f, "", r.Status)
	}
	var k createdKey
	if err := r.Decode(&k); err != nil || k.Key == "" {
		return c.fail(ec, http.StatusBadGateway, "the key was created but the API's answer could not be read: revoke it and create another")
	}
	return c.render(ec, http.StatusCreated, "keycreated", "Key created", k)
}

// createdKey is POST /v1/keys's answer.
type createdKey struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	Role      string   `json:"role"`
	Agents    []string `json:"agents"`
	Prefix    string   `json:"prefix"`
	ExpiresAt string   `json:"expiresAt"`
	Key       string   `json:"key"`
}

func (createdKey) nav() string { return "keys" }

// bindKey binds an unbound agent key through POST /v1/keys/:id/bind.
func (c *Console) bindKey(ec echo.Context) error {
	id := ec.Param("id")
	r := c.call(ec, http.MethodPost, "/v1/keys/"+url.PathEscape(id)+"/bind", map[string]any{"agentIds": splitList(ec.FormValue("agents"))})
	if r.Status == http.StatusUnauthorized {
		return c.apiFail(ec, r)
	}
	if !r.OK() {
		return c.keysView(ec, nil, r.Problem(), r.Status)
	}
	return ec.Redirect(http.StatusSeeOther, Prefix+"/keys?flash="+url.QueryEscape("key "+id+" bound to "+ec.FormValue("agents")))
}

// revokeKeyPage is the confirmation step before a revocation.
func (c *Console) revokeKeyPage(ec echo.Context) error {
	id := ec.Param("id")
	intro := "Revoking is immediate and cannot be undone: every request with this key is refused from now on."
	if principal(ec).KeyID == id {
		intro += " It is the key you are signed in with: revoking it signs you out."
	}
	return c.confirmStep(ec, "/v1/keys", "id", id, "key "+id, func(k map[string]any) confirmView {
		return confirmView{NavKey: "keys", Heading: "Revoke key " + text(k["name"]), Intro: intro,
			Facts: [][2]string{{"Id", id}, {"Name", text(k["name"])}, {"Role", text(k["role"])}, {"Agents", text(k["agents"])},
				{"Prefix", text(k["prefix"])}, {"Created", text(k["createdAt"])}, {"Status", text(k["status"])}},
			Form: rowForm{ID: "revoke-key", Action: Prefix + "/keys/" + url.PathEscape(id) + "/revoke", Label: "Revoke key", Danger: true}}
	})
}

// revokeKey revokes through DELETE /v1/keys/:id.
func (c *Console) revokeKey(ec echo.Context) error {
	id := ec.Param("id")
	return c.deleteThen(ec, "/v1/keys/"+url.PathEscape(id), "keys", "key "+id+" revoked")
}
