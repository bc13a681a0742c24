from ltx_lora.cli import main

main()
