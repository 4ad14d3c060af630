from poisonscan.bench import main

main()
