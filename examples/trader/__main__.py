from examples.trader.main import main

main()
