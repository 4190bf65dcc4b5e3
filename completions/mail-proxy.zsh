#compdef mail-proxy
# zsh completion for mail-proxy (generated: mail-proxy completion show zsh)
_mail_proxy() {
    local -a candidates
    candidates=(${(f)"$(mail-proxy __complete "${(@)words[2,CURRENT]}" 2>/dev/null)"})
    if (( ${#candidates} )); then
        compadd -a candidates
    else
        _files
    fi
}
# compdef exists only once the completion system is loaded; a ~/.zshrc without compinit
# would otherwise print "command not found: compdef" at every new shell
(( $+functions[compdef] )) || { autoload -Uz compinit && compinit -i; }
compdef _mail_proxy mail-proxy
