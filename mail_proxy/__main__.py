from mail_proxy.cli import main

main()
