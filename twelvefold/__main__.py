from twelvefold.command import main

main()
