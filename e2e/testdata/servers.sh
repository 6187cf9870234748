#!/usr/bin/env bash
# servers.sh DIR — start real mail servers on 127.0.0.1 that accept OAuth2 SASL logins,
# for mailproxy's e2e tests (adapted from the team's shared peers harness).
#
#   * tokens are validated by RFC 7662 introspection at $E2E_INTROSPECT_URL (the test's fake IdP)
#   * Dovecot 2.3: IMAP (STARTTLS + implicit TLS), POP3 (STARTTLS + implicit TLS), LMTP;
#     passdb oauth2 (XOAUTH2, OAUTHBEARER) + passwd-file (PLAIN, LOGIN); maildirs under DIR
#   * Postfix: submission (STARTTLS required), submissions (implicit TLS), plain smtp port;
#     SASL via Dovecot's auth service, delivery into Dovecot over LMTP
#
# Everything (config, TLS, state, logs, mail, pid files) lives under DIR. Writes DIR/env.
# Needs root (package install, privilege drop to vmail/postfix/dovenull). Ports: PEERS_PORT_BASE
# (default 14000) + fixed offsets, see below. Stop with stop.sh DIR, verify with check.sh DIR.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
T0=${EPOCHREALTIME/./}
mkdir -p "$1"
DIR=$(cd "$1" && pwd)
BASE=${PEERS_PORT_BASE:-14000}
INTROSPECT_URL=${E2E_INTROSPECT_URL:?set E2E_INTROSPECT_URL to the fake IdP introspection endpoint}
HOST=127.0.0.1
DOMAIN=example.test

P_AUTH=$((BASE + 12))         # dovecot auth (client protocol) for postfix SASL
P_LMTP=$((BASE + 24))         # dovecot LMTP, postfix delivers here
P_SMTP=$((BASE + 25))         # postfix smtpd, STARTTLS optional, AUTH w/o TLS, Outlook-like: LOGIN XOAUTH2 only
P_POP3=$((BASE + 110))        # pop3 + STARTTLS(STLS)
P_IMAP=$((BASE + 143))        # imap + STARTTLS
P_SUBMISSIONS=$((BASE + 465)) # postfix implicit TLS
P_SUBMISSION=$((BASE + 587))  # postfix, STARTTLS required before AUTH/MAIL
P_IMAPS=$((BASE + 993))
P_POP3S=$((BASE + 995))
ALL_PORTS="$P_AUTH $P_LMTP $P_SMTP $P_POP3 $P_IMAP $P_SUBMISSIONS $P_SUBMISSION $P_IMAPS $P_POP3S"

elapsed() { local t=${EPOCHREALTIME/./}; printf '%d.%03d' $(((t - T0) / 1000000)) $(((t - T0) / 1000 % 1000)); }
log() { echo "[start +$(elapsed)s] $*"; }
# Is something listening on $HOST:$1? (ss avoids connecting, which would spam the server logs)
listening() {
  if command -v ss >/dev/null; then ss -Hltn "src $HOST:$1" | grep -q .
  else (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; fi
}
die() { echo "start.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"

# ---------------------------------------------------------------- 1. packages
# One list of what the tests need, shared with .ci/run and the README.
"$(dirname "${BASH_SOURCE[0]}")/../../scripts/install-test-deps.sh" || die "package install failed"
log "packages ok: dovecot $(dovecot --version | cut -d' ' -f1), postfix $(postconf -d -h mail_version 2>/dev/null)"

# vmail owns the maildirs; dovecot/dovenull/postfix users come with the packages.
id vmail >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin vmail
VMAIL_UID=$(id -u vmail); VMAIL_GID=$(id -g vmail)

# ------------------------------------------------------- 2. refuse double start
for pf in "$DIR/dovecot/run/master.pid" "$DIR/postfix/spool/pid/master.pid"; do
  pid=""; if [ -s "$pf" ]; then pid=$(tr -d ' \n' <"$pf"); fi
  if [ -n "$pid" ] && [ -e "/proc/$pid" ] && ! grep -q '^[^)]*) Z' "/proc/$pid/stat" 2>/dev/null; then
    die "already running ($pf); run stop.sh $DIR first"
  fi
done
for p in $ALL_PORTS; do
  if listening "$p"; then die "port $p on $HOST is already in use (set PEERS_PORT_BASE)"; fi
done

# --------------------------------------------------------------- 3. layout + TLS
mkdir -p "$DIR"/{tls,run,logs,dovecot,postfix,mail}
chmod 755 "$DIR" "$DIR"/{tls,run,logs,dovecot,postfix}
chown vmail:vmail "$DIR/mail"; chmod 770 "$DIR/mail"
TLS=$DIR/tls
if [ ! -s "$TLS/server.pem" ]; then
  # A tiny CA (clients trust ca.pem) and a leaf for localhost / 127.0.0.1 / ::1 / mail.example.test.
  # Proper extensions so strict verifiers (Go, Python 3.13 VERIFY_X509_STRICT) accept it.
  # ECDSA P-256 keys: generated instantly (RSA keygen costs ~0.5 s each on a busy 2-core box).
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 -subj "/CN=peers test CA" \
    -keyout "$TLS/ca.key" -out "$TLS/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" -keyout "$TLS/server.key" \
    -out "$TLS/server.csr" 2>/dev/null
  cat >"$TLS/server.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:mail.$DOMAIN,IP:127.0.0.1,IP:::1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
  openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$TLS/server.ext" -out "$TLS/server.pem" 2>/dev/null
fi
chmod 644 "$TLS"/*.pem; chmod 600 "$TLS"/*.key
log "tls ok"

# --------------------------------------------------------- 4. users
USERS="alice bob sink carol dave erin frank bulk gina hank ivy"

# ----------------------------------------------------------------- 5. dovecot
: >"$DIR/dovecot/users"
for u in $USERS; do echo "$u@$DOMAIN:{PLAIN}$u-pw::::::" >>"$DIR/dovecot/users"; done
chmod 644 "$DIR/dovecot/users"

# passdb oauth2: dovecot POSTs token=... to introspection_url for every XOAUTH2/OAUTHBEARER login
# and requires active=true and username == the SASL user (no auth cache -> revocation is immediate).
cat >"$DIR/dovecot/oauth2.conf.ext" <<EOF
introspection_url = $INTROSPECT_URL
introspection_mode = post
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 5000
debug = ${PEERS_DOVECOT_DEBUG:-no}
EOF
cat >"$DIR/dovecot/dovecot.conf" <<EOF
# Generated by start.sh. Runs as root; logins as dovenull, mail processes as vmail.
instance_name = peers-dovecot
base_dir = $DIR/dovecot/run
state_dir = $DIR/dovecot/state
protocols = imap pop3 lmtp
listen = $HOST
log_path = $DIR/logs/dovecot.log
auth_verbose = yes
auth_debug = ${PEERS_DOVECOT_DEBUG:-no}
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = $VMAIL_UID
first_valid_gid = $VMAIL_GID
mail_uid = vmail
mail_gid = vmail
mail_location = maildir:$DIR/mail/%d/%n/Maildir
# Keep CRLF in the files, so tests can compare stored messages byte for byte.
mail_save_crlf = yes
ssl = yes
ssl_cert = <$TLS/server.pem
ssl_key = <$TLS/server.key
ssl_dh = </usr/share/dovecot/dh.pem
ssl_min_protocol = TLSv1.2
# Loopback counts as "secured" in Dovecot, so plaintext AUTH works without TLS on 127.0.0.1 anyway.
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
auth_username_format = %Lu
# Failed logins answer after this delay (Dovecot default 2 secs; 0 keeps test suites fast).
auth_failure_delay = ${PEERS_AUTH_FAILURE_DELAY:-0}

passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $DIR/dovecot/oauth2.conf.ext
}
passdb {
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN $DIR/dovecot/users
}
userdb {
  driver = passwd-file
  args = $DIR/dovecot/users
  default_fields = home=$DIR/mail/%d/%n
}

# Room for the benchmarks (1,000 concurrent logins, 10,000 IDLE sessions):
# Dovecot's high-performance login mode and several sessions per imap
# process, instead of one process per connection.
service imap-login {
  inet_listener imap {
    port = $P_IMAP
  }
  inet_listener imaps {
    port = $P_IMAPS
    ssl = yes
  }
  service_count = 0
  process_min_avail = 2
  process_limit = 8
  client_limit = 2500
}
service imap {
  service_count = 0
  process_min_avail = 4
  client_limit = 200
  process_limit = 200
}
service pop3-login {
  inet_listener pop3 {
    port = $P_POP3
  }
  inet_listener pop3s {
    port = $P_POP3S
    ssl = yes
  }
}
service lmtp {
  inet_listener lmtp {
    address = $HOST
    port = $P_LMTP
  }
}
service auth {
  # Postfix (smtpd_sasl_type = dovecot) talks to this listener.
  inet_listener auth-postfix {
    address = $HOST
    port = $P_AUTH
  }
}
service anvil {
  # No auth-penalty socket -> no per-IP penalty (up to 15 s) after failed logins from 127.0.0.1.
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
protocol pop3 {
  pop3_uidl_format = %08Xu%08Xv
  mail_max_userip_connections = 1000
}
protocol imap {
  mail_max_userip_connections = 20000
}
protocol lmtp {
  postmaster_address = postmaster@$DOMAIN
}
EOF
/usr/sbin/dovecot -c "$DIR/dovecot/dovecot.conf" -n >"$DIR/dovecot/effective.conf" 2>"$DIR/logs/dovecot-config.err" ||
  { cat "$DIR/logs/dovecot-config.err" >&2; die "dovecot config invalid"; }

# ----------------------------------------------------------------- 6. postfix
# config dir must not contain the queue: `postfix check` wants everything under it root-owned.
PF=$DIR/postfix/etc
mkdir -p "$PF"
for u in $USERS; do echo "$u@$DOMAIN OK"; done >"$PF/vmailbox"
# Local addresses map to themselves; anything else lands in sink@ (no mail leaves this machine).
printf '!/@%s$/ sink@%s\n' "${DOMAIN//./\\.}" "$DOMAIN" >"$PF/catchall.regexp"
cat >"$PF/main.cf" <<EOF
# Generated by start.sh.
compatibility_level = 3.6
queue_directory = $DIR/postfix/spool
data_directory = $DIR/postfix/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $DIR/logs/postfix.log
maillog_file_prefixes = $DIR/logs
myhostname = mail.$DOMAIN
mydomain = $DOMAIN
myorigin = \$mydomain
mydestination =
mynetworks = 127.0.0.0/8
inet_interfaces = $HOST
inet_protocols = ipv4
alias_maps =
alias_database =
biff = no
# Big messages (the tests relay 20 MB and benchmark 100 MB) and no 8bit->QP rewriting.
message_size_limit = 262144000
mailbox_size_limit = 0
virtual_mailbox_limit = 0
disable_mime_output_conversion = yes
smtp_dns_support_level = disabled
smtpd_banner = \$myhostname ESMTP peers-postfix
virtual_mailbox_domains = $DOMAIN
virtual_mailbox_maps = texthash:$PF/vmailbox
virtual_alias_maps = regexp:$PF/catchall.regexp
# must be empty, else the default (\$virtual_alias_maps) makes the negated regexp claim example.test
virtual_alias_domains =
virtual_transport = lmtp:inet:$HOST:$P_LMTP
# SASL through Dovecot: advertises whatever Dovecot offers (PLAIN LOGIN XOAUTH2 OAUTHBEARER).
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:$HOST:$P_AUTH
smtpd_sasl_security_options = noanonymous
smtpd_sasl_tls_security_options = noanonymous
smtpd_tls_cert_file = $TLS/server.pem
smtpd_tls_key_file = $TLS/server.key
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_tls_loglevel = 1
# Only authenticated clients may send, to any address.
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
EOF
# chroot=n everywhere: nothing to copy into a jail, absolute paths work.
cat >"$PF/master.cf" <<EOF
# service type  private unpriv  chroot  wakeup  maxproc command + args
$HOST:$P_SUBMISSION inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
$HOST:$P_SUBMISSIONS inet n - n - - smtpd
  -o syslog_name=postfix/submissions
  -o smtpd_tls_wrappermode=yes
$HOST:$P_SMTP inet n - n - - smtpd
  -o syslog_name=postfix/smtp-plain
  -o smtpd_tls_auth_only=no
  -o smtpd_sasl_mechanism_filter=login,xoauth2
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
# Queue layout as in /etc/postfix/postfix-files, made directly: `postfix check` would do it too
# but costs ~4 s on a fresh queue. quick-start makes `postfix start` skip its integrity checks.
Q=$DIR/postfix/spool
install -d -o root -g root -m 755 "$Q" "$Q/pid"
for d in active bounce corrupt defer deferred flush hold incoming private saved trace; do
  install -d -o postfix -g root -m 700 "$Q/$d"
done
install -d -o postfix -g postdrop -m 730 "$Q/maildrop"
install -d -o postfix -g postdrop -m 710 "$Q/public"
install -d -o postfix -g root -m 700 "$DIR/postfix/data"
if [ "${PEERS_POSTFIX_CHECK:-0}" = 1 ]; then
  # Postfix commands log to maillog_file (or syslog/tty), not to stderr: show the log on failure.
  /usr/sbin/postfix -c "$PF" check >>"$DIR/logs/postfix.log" 2>&1 ||
    { tail -n 20 "$DIR/logs/postfix.log" >&2; die "postfix check failed"; }
fi
touch "$Q/quick-start"
log "configs written"

# ------------------------------------------------------------------- 7. start
# Daemons must not keep our stdout/stderr open (callers reading our output would never see EOF).
ulimit -n "$(ulimit -Hn)"
/usr/sbin/dovecot -c "$DIR/dovecot/dovecot.conf" </dev/null >>"$DIR/logs/dovecot.stderr" 2>&1 ||
  { cat "$DIR/logs/dovecot.stderr" >&2; die "dovecot failed to start"; }
log "dovecot started"
/usr/sbin/postfix -c "$PF" start </dev/null >>"$DIR/logs/postfix.log" 2>&1 ||
  { tail -n 20 "$DIR/logs/postfix.log" >&2; die "postfix start failed"; }
log "postfix started"

# Bounded wait until every port accepts connections.
deadline=$(( $(date +%s) + ${PEERS_START_TIMEOUT:-30} ))
for p in $ALL_PORTS; do
  until listening "$p"; do
    [ "$(date +%s)" -lt "$deadline" ] || { tail -n 20 "$DIR"/logs/*.log >&2; die "port $p did not open in time"; }
    sleep 0.1
  done
done
log "all ports open"

# -------------------------------------------------------------------- 8. env
cat >"$DIR/env" <<EOF
PEERS_DIR=$DIR
PEERS_CA_CERT=$TLS/ca.pem
PEERS_IMAP_PORT=$P_IMAP
PEERS_IMAPS_PORT=$P_IMAPS
PEERS_POP3_PORT=$P_POP3
PEERS_POP3S_PORT=$P_POP3S
PEERS_SUBMISSION_PORT=$P_SUBMISSION
PEERS_SUBMISSIONS_PORT=$P_SUBMISSIONS
PEERS_SMTP_PORT=$P_SMTP
EOF
log "started (DIR=$DIR)"
