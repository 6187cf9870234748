#!/usr/bin/env bash
# Installs what the e2e tests drive: Dovecot (IMAP, POP3, LMTP), Postfix, PostgreSQL (the
# shared token store; tests start their own clusters), the real clients (swaks, fetchmail,
# mbsync, offlineimap, curl, Python 3) and Chromium (the admin page is tested in it, headless).
# Debian/Ubuntu, as root. Safe to run twice.
set -euo pipefail
pkgs=()
[ -x /usr/sbin/dovecot ] || pkgs+=(dovecot-core)
[ -x /usr/lib/dovecot/imap ] || pkgs+=(dovecot-imapd)
[ -x /usr/lib/dovecot/pop3 ] || pkgs+=(dovecot-pop3d)
[ -x /usr/lib/dovecot/lmtp ] || pkgs+=(dovecot-lmtpd)
[ -x /usr/sbin/postfix ] || pkgs+=(postfix)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || pkgs+=(postgresql)
command -v swaks >/dev/null || pkgs+=(swaks)
command -v fetchmail >/dev/null || pkgs+=(fetchmail)
command -v mbsync >/dev/null || pkgs+=(isync)
command -v offlineimap >/dev/null || pkgs+=(offlineimap3)
command -v prlimit >/dev/null || pkgs+=(util-linux)
command -v curl >/dev/null || pkgs+=(curl)
command -v openssl >/dev/null || pkgs+=(openssl)
command -v ss >/dev/null || pkgs+=(iproute2)
command -v systemd-analyze >/dev/null || pkgs+=(systemd)
[ -x /usr/bin/python3 ] || pkgs+=(python3)
[ -x /usr/bin/chromium ] || pkgs+=(chromium)
[ ${#pkgs[@]} -eq 0 ] && exit 0
echo "installing: ${pkgs[*]}"
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
# Keep the packages' scripts from starting system-wide daemons on ports 25/143/993/5432.
made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends ca-certificates "${pkgs[@]}" >/dev/null
[ $made_policy -eq 1 ] && rm -f /usr/sbin/policy-rc.d
exit 0
