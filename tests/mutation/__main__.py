from tests.mutation.run import main

main()
