// Package natsauth authenticates every connection to NATS and confines
// each service to the subjects it needs.
//
// Each service, and the operator's CLI ("admin"), has its own NKey user:
// an Ed25519 key pair whose seed stays with the client (a file, 0600) and
// whose public key is listed in the server's authorization block with the
// service's permissions. Permissions are derived from the access table in
// pkg/streams, so they follow the stream definitions instead of a
// hand-kept list. NKey users in the server configuration were chosen over
// decentralized JWT accounts because the same users work unchanged in the
// embedded server of `vigil dev` (server.Options.Nkeys) and in a
// nats-server config file (compose, Kubernetes), with no operator, account
// resolver or signing keys to run; see docs/security.md.
package natsauth

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/vigilhq/vigil/pkg/streams"
)

// Admin is the user of the operator's CLI and of `vigil dev`'s own
// bookkeeping. It has no subject restrictions: whoever holds its seed owns
// the deployment, which is why the seed file is 0600.
const Admin = "admin"

// seedExt is the extension of a seed file: <dir>/<user>.nk.
const seedExt = ".nk"

// ErrNoCredential is returned when a user's seed file is missing.
var ErrNoCredential = errors.New("natsauth: no credential")

// User is one NKey user as the server knows it.
type User struct {
	// Name is streams.Access.Service or Admin.
	Name string
	// PublicKey is the NKey public key (U…).
	PublicKey string
}

// Users returns every user name: each service of streams.Accesses, then
// Admin.
func Users() []string {
	var names []string
	for _, a := range streams.Accesses() {
		names = append(names, a.Service)
	}
	return append(names, Admin)
}

// SeedFile is where user's seed lives in dir.
func SeedFile(dir, user string) string { return filepath.Join(dir, user+seedExt) }

// Init makes sure dir holds a seed for every user of Users, generating the
// missing ones (dir 0700, files 0600), and returns the users. Existing
// seeds are kept, so running it again is harmless.
func Init(dir string) ([]User, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("natsauth: credentials dir: %w", err)
	}
	var users []User
	for _, name := range Users() {
		path := SeedFile(dir, name)
		pub, err := publicKeyOf(path)
		if errors.Is(err, ErrNoCredential) {
			pub, err = generate(path)
		}
		if err != nil {
			return nil, err
		}
		users = append(users, User{Name: name, PublicKey: pub})
	}
	return users, nil
}

// Load reads the users whose seeds are in dir, failing if one is missing.
func Load(dir string) ([]User, error) {
	var users []User
	for _, name := range Users() {
		pub, err := publicKeyOf(SeedFile(dir, name))
		if err != nil {
			return nil, err
		}
		users = append(users, User{Name: name, PublicKey: pub})
	}
	return users, nil
}

func generate(path string) (string, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", fmt.Errorf("natsauth: generate nkey: %w", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return "", fmt.Errorf("natsauth: nkey seed: %w", err)
	}
	// O_EXCL: two processes initialising the same directory must not
	// overwrite each other's seed after one of them handed it out.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("natsauth: write %s: %w", path, err)
	}
	if _, err := f.Write(append(seed, '\n')); err != nil {
		f.Close()
		return "", fmt.Errorf("natsauth: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("natsauth: write %s: %w", path, err)
	}
	return kp.PublicKey()
}

// readSeed returns the key pair of the seed in path.
func readSeed(path string) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist (run `vigil nats init`)", ErrNoCredential, path)
	}
	if err != nil {
		return nil, fmt.Errorf("natsauth: read %s: %w", path, err)
	}
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return nil, fmt.Errorf("natsauth: %s is not an nkey seed: %w", path, err)
	}
	if _, err := kp.Seed(); err != nil {
		return nil, fmt.Errorf("natsauth: %s holds no seed: %w", path, err)
	}
	return kp, nil
}

func publicKeyOf(path string) (string, error) {
	kp, err := readSeed(path)
	if err != nil {
		return "", err
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return "", fmt.Errorf("natsauth: public key of %s: %w", path, err)
	}
	if !nkeys.IsValidPublicUserKey(pub) {
		return "", fmt.Errorf("natsauth: %s is not a user seed", path)
	}
	return pub, nil
}

// EnvFile is where WriteEnvFiles puts user's credential: a docker
// env-file setting VIGIL_NATS_NKEY.
func EnvFile(dir, user string) string { return filepath.Join(dir, user+".env") }

// WriteEnvFiles writes, for every user whose seed is in seedDir, an env
// file (0600) in dir that passes the seed as VIGIL_NATS_NKEY: compose reads
// it on the host, so the seed reaches the non-root container without a
// file the container user could not read.
func WriteEnvFiles(seedDir, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("natsauth: %w", err)
	}
	for _, name := range Users() {
		seed, err := os.ReadFile(SeedFile(seedDir, name))
		if err != nil {
			return fmt.Errorf("natsauth: %w", err)
		}
		data := "# NATS credential of " + name + " (generated by `vigil nats init`)\nVIGIL_NATS_NKEY=" + strings.TrimSpace(string(seed)) + "\n"
		path := EnvFile(dir, name)
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			return fmt.Errorf("natsauth: write %s: %w", path, err)
		}
		// WriteFile keeps an existing file's mode.
		if err := os.Chmod(path, 0o600); err != nil {
			return fmt.Errorf("natsauth: %w", err)
		}
	}
	return nil
}

// InboxPrefix is the reply-subject prefix of the user with public key
// pub. Each user gets its own, and may subscribe only under it, so no
// service can read the replies (decisions, JetStream API answers) meant
// for another.
func InboxPrefix(pub string) string { return "_INBOX_" + pub }

// ServerUsers returns the server-side users: Admin unrestricted, every
// service confined to Permissions of its access.
func ServerUsers(users []User) ([]*server.NkeyUser, error) {
	access := map[string]streams.Access{}
	for _, a := range streams.Accesses() {
		access[a.Service] = a
	}
	var out []*server.NkeyUser
	for _, u := range users {
		nu := &server.NkeyUser{Nkey: u.PublicKey}
		if u.Name != Admin {
			a, ok := access[u.Name]
			if !ok {
				return nil, fmt.Errorf("natsauth: unknown user %q", u.Name)
			}
			nu.Permissions = Permissions(a, u.PublicKey)
		}
		out = append(out, nu)
	}
	return out, nil
}

// Permissions are what a service with access a, connecting with public key
// pub, may publish and subscribe to. Everything not listed is refused.
func Permissions(a streams.Access, pub string) *server.Permissions {
	pubs := newSet()
	subs := newSet()
	inbox := InboxPrefix(pub) + ".>"
	subs.add(inbox)
	// Account info is what jetstream.New and KV creation ask first; it
	// tells limits, not data.
	pubs.add("$JS.API.INFO")
	for _, s := range a.Owns {
		pubs.add(streams.StreamSubjects(s)...)
		pubs.add(manage(s)...)
		pubs.add(read(s)...)
	}
	pubs.add(a.Writes...)
	for _, s := range a.Reads {
		pubs.add(read(s)...)
	}
	for _, s := range a.Watches {
		pubs.add("$JS.API.STREAM.INFO."+s, "$JS.API.CONSUMER.INFO."+s+".>")
	}
	for _, b := range a.Buckets {
		stream := "KV_" + b
		pubs.add("$KV." + b + ".>")
		pubs.add(manage(stream)...)
		pubs.add(read(stream)...)
	}
	pubs.add(a.Calls...)
	subs.add(a.Serves...)
	pubs.add(a.Gossip...)
	subs.add(a.Gossip...)
	p := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pubs.list()},
		Subscribe: &server.SubjectPermission{Allow: subs.list()},
	}
	if len(a.Serves) > 0 {
		// A responder publishes its one reply to the requester's inbox,
		// which it may not otherwise publish to. The nats.go/micro
		// framework also answers discovery ($SRV.PING, INFO, STATS).
		p.Response = &server.ResponsePermission{MaxMsgs: 1}
		p.Subscribe.Allow = append(p.Subscribe.Allow, "$SRV.>")
	}
	return p
}

// manage is the JetStream API a stream's owner uses to declare it.
func manage(stream string) []string {
	return []string{"$JS.API.STREAM.CREATE." + stream, "$JS.API.STREAM.UPDATE." + stream}
}

// read is the JetStream API a reader of stream uses: stream info, single
// message reads (direct or not), consumers (durable and ordered, pull and
// push with flow control) and acks.
func read(stream string) []string {
	return []string{
		"$JS.API.STREAM.INFO." + stream,
		"$JS.API.STREAM.MSG.GET." + stream,
		"$JS.API.DIRECT.GET." + stream,
		"$JS.API.DIRECT.GET." + stream + ".>",
		"$JS.API.CONSUMER.CREATE." + stream,
		"$JS.API.CONSUMER.CREATE." + stream + ".>",
		"$JS.API.CONSUMER.DURABLE.CREATE." + stream + ".>",
		"$JS.API.CONSUMER.INFO." + stream + ".>",
		"$JS.API.CONSUMER.DELETE." + stream + ".>",
		"$JS.API.CONSUMER.MSG.NEXT." + stream + ".>",
		"$JS.API.CONSUMER.NAMES." + stream,
		"$JS.API.CONSUMER.LIST." + stream,
		"$JS.ACK." + stream + ".>",
		"$JS.FC." + stream + ".>",
	}
}

type set map[string]struct{}

func newSet() set { return set{} }

func (s set) add(v ...string) {
	for _, x := range v {
		s[x] = struct{}{}
	}
}

func (s set) list() []string {
	out := make([]string, 0, len(s))
	for x := range s {
		out = append(out, x)
	}
	sort.Strings(out)
	return out
}

// Credential says who a client is: the seed in File or, for container
// environments that pass secrets as variables, the Seed itself. Both empty
// connects anonymously, which an authenticated server refuses.
type Credential struct {
	File, Seed string
}

// FileCredential is the credential in a seed file.
func FileCredential(path string) Credential { return Credential{File: path} }

// ClientOptions are the nats.go options that connect as cred, over TLS
// when t has a CA or a certificate.
func ClientOptions(cred Credential, t TLSFiles) ([]nats.Option, error) {
	var opts []nats.Option
	var kp nkeys.KeyPair
	switch {
	case cred.File != "" && cred.Seed != "":
		return nil, errors.New("natsauth: give a seed file or a seed, not both")
	case cred.File != "":
		var err error
		if kp, err = readSeed(cred.File); err != nil {
			return nil, err
		}
	case cred.Seed != "":
		var err error
		if kp, err = nkeys.FromSeed([]byte(strings.TrimSpace(cred.Seed))); err != nil {
			return nil, fmt.Errorf("natsauth: the NKey seed does not parse: %w", err)
		}
	}
	if kp != nil {
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("natsauth: public key: %w", err)
		}
		if !nkeys.IsValidPublicUserKey(pub) {
			return nil, errors.New("natsauth: the NKey seed is not a user seed")
		}
		// The key pair stays in memory for the connection's life: it
		// signs the server's nonce on every (re)connect.
		opts = append(opts, nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(InboxPrefix(pub)))
	}
	if t.CA != "" {
		opts = append(opts, nats.RootCAs(t.CA))
	}
	if t.Cert != "" || t.Key != "" {
		if t.Cert == "" || t.Key == "" {
			return nil, errors.New("natsauth: a TLS client certificate needs both --nats-tls-cert and --nats-tls-key")
		}
		opts = append(opts, nats.ClientCert(t.Cert, t.Key))
	}
	return opts, nil
}

// TLSFiles name PEM files. On a client, CA verifies the server and Cert
// with Key is the client's certificate (for servers that verify clients).
// On a server, Cert with Key is the server's certificate and CA, when set,
// verifies client certificates, which are then required.
type TLSFiles struct {
	CA, Cert, Key string
}

// Enabled reports whether any file is set.
func (t TLSFiles) Enabled() bool { return t.CA != "" || t.Cert != "" || t.Key != "" }

// ServerTLS builds the server's TLS configuration from t.
func ServerTLS(t TLSFiles) (*tls.Config, error) {
	if t.Cert == "" || t.Key == "" {
		return nil, errors.New("natsauth: server TLS needs a certificate and a key")
	}
	cfg, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: t.Cert, KeyFile: t.Key, CaFile: t.CA, Verify: t.CA != "",
	})
	if err != nil {
		return nil, fmt.Errorf("natsauth: server TLS: %w", err)
	}
	return cfg, nil
}

// ServerConfig renders the authorization (and, when t is enabled, tls)
// blocks of a nats-server configuration file with the same users and
// permissions ServerUsers gives the embedded server. Paths in t are
// written as given: they are the server's paths (inside its container).
func ServerConfig(users []User, t TLSFiles) (string, error) {
	nus, err := ServerUsers(users)
	if err != nil {
		return "", err
	}
	names := map[string]string{}
	for _, u := range users {
		names[u.PublicKey] = u.Name
	}
	var b strings.Builder
	b.WriteString("# Generated by `vigil nats init`: one NKey user per Vigil service, with the\n")
	b.WriteString("# subjects pkg/streams says it may use. Regenerate rather than edit.\n")
	b.WriteString("authorization {\n  users = [\n")
	for _, u := range nus {
		fmt.Fprintf(&b, "    # %s\n    { nkey: %q", names[u.Nkey], u.Nkey)
		if p := u.Permissions; p != nil {
			b.WriteString(", permissions: {\n")
			fmt.Fprintf(&b, "        publish: { allow: %s }\n", quoteList(p.Publish.Allow))
			fmt.Fprintf(&b, "        subscribe: { allow: %s }\n", quoteList(p.Subscribe.Allow))
			if p.Response != nil {
				fmt.Fprintf(&b, "        allow_responses: { max: %d }\n", p.Response.MaxMsgs)
			}
			b.WriteString("      }")
		}
		b.WriteString(" }\n")
	}
	b.WriteString("  ]\n}\n")
	if t.Enabled() {
		b.WriteString("tls {\n")
		fmt.Fprintf(&b, "  cert_file: %q\n  key_file: %q\n", t.Cert, t.Key)
		if t.CA != "" {
			fmt.Fprintf(&b, "  ca_file: %q\n  verify: true\n", t.CA)
		}
		b.WriteString("}\n")
	}
	return b.String(), nil
}

func quoteList(v []string) string {
	q := make([]string, len(v))
	for i, s := range v {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
