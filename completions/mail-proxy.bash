# bash completion for mail-proxy (generated: mail-proxy completion show bash)
_mail_proxy_complete() {
    local IFS=$'\n'
    COMPREPLY=($(mail-proxy __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -o default -F _mail_proxy_complete mail-proxy
