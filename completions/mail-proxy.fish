# fish completion for mail-proxy (generated: mail-proxy completion show fish)
function __mail_proxy_complete
    set -l words (commandline -opc) (commandline -ct)
    mail-proxy __complete $words[2..-1] 2>/dev/null
end
complete -c mail-proxy -f -a '(__mail_proxy_complete)'
